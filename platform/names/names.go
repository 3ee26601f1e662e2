// Package names says what a domain or a model version may be called: the
// names end up in Consul tags, KV keys, metric keys and URLs.
package names

import "regexp"

// Pattern matches a valid domain or version name.
var Pattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// Valid reports whether s is a valid domain or version name.
func Valid(s string) bool { return Pattern.MatchString(s) }

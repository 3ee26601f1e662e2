// Package experimentctl reads, validates and writes experiment documents in
// Consul KV for teams.
package experimentctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/hashicorp/consul/api"

	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/experiment"
)

// Registered returns the ranker versions registered for domain.
func Registered(ctx context.Context, c *api.Client, domain string) (map[string]bool, error) {
	entries, _, err := c.Health().Service(consulx.RankerService, "", false, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list rankers: %w", err)
	}
	out := map[string]bool{}
	for _, e := range entries {
		if e.Service.Meta[consulx.MetaDomain] == domain {
			out[e.Service.Meta[consulx.MetaVersion]] = true
		}
	}
	return out, nil
}

// Validate parses doc and checks its versions against the registered ones,
// as the router will.
func Validate(ctx context.Context, c *api.Client, domain string, doc []byte) error {
	if !experiment.Name.MatchString(domain) {
		return fmt.Errorf("domain %q is not a domain name", domain)
	}
	e, err := experiment.Parse(doc)
	if err != nil {
		return err
	}
	reg, err := Registered(ctx, c, domain)
	if err != nil {
		return err
	}
	return e.Validate(func(v string) bool { return reg[v] })
}

// Get returns the domain's document, pretty-printed.
func Get(ctx context.Context, c *api.Client, domain string) ([]byte, error) {
	kv, _, err := c.KV().Get(experiment.Prefix+domain, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	if kv == nil {
		return nil, fmt.Errorf("no experiment for domain %q (%s%s is empty)", domain, experiment.Prefix, domain)
	}
	var out bytes.Buffer
	if json.Indent(&out, kv.Value, "", "  ") != nil {
		return kv.Value, nil
	}
	return out.Bytes(), nil
}

// Set validates doc and writes it.
func Set(ctx context.Context, c *api.Client, domain string, doc []byte) error {
	if err := Validate(ctx, c, domain, doc); err != nil {
		return fmt.Errorf("not written: %w", err)
	}
	_, err := c.KV().Put(&api.KVPair{Key: experiment.Prefix + domain, Value: doc}, (&api.WriteOptions{}).WithContext(ctx))
	return err
}

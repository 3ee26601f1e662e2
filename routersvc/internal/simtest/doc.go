// Package simtest tests the router's experiments end to end in process:
// the simulator (module sim) drives a router assembled by app over bufconn,
// in front of the real feature, ranker and auction code, with a clock the
// tests control. Its tests are the statistical ones: A/A, lift, SRM,
// bandits, interleaving, canaries, shadows, events and shared state.
package simtest

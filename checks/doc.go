// Package checks defines what a security check is to longhaul's checkers, and
// holds the built-in ones: synthetic (deterministic, for the embedded default
// and the benchmarks), tls and headers.
//
// A check scans one asset and reports findings; the checker turns them into
// insights (adding account, asset, scan id, checker and observed_at), pushes
// them to an edge and completes the scan, so a finding that a later scan no
// longer reports is resolved.
//
// # Kinds
//
// Every kind a check reports is "<check>.<rest>", e.g. "tls.expiry", so
// KindCheck tells which check an on-demand scan of one kind needs. Each
// built-in check lists its kinds (Kinds method) and documents them.
//
// The built-in checks ignore Target.Kind and always report everything they
// find: completing a scan resolves the asset's insights of that checker that
// the scan did not report, so a scan filtered to one kind would resolve all
// the others.
//
// # Outside input
//
// The tls and headers checks read what remote servers send: certificate
// names, header values, redirect targets. Every string taken from them is
// made valid UTF-8 without NUL or control characters and cut to a bounded
// length before it goes into a subject or details, so a hostile server can
// neither make the edge refuse the insight nor blow up its size.
//
// # Concurrency
//
// The checks built by Builtin (and NewSynthetic, NewTLS, NewHeaders) hold no
// mutable state of their own and are safe for concurrent use. Each calls
// report from the goroutine that called Run, and only before Run returns.
package checks

// Package devstack runs all of longhaul in one process on its embedded
// defaults: `longhaul dev`. It is for trying longhaul out, for demos and
// for the tests that want every piece at once; nothing of it is meant for
// production.
//
//	st, err := devstack.Start(ctx, devstack.Config{})
//	…
//	st.WriteBanner(os.Stdout)
//	st.Run(ctx, os.Stdout) // a line per region every 5s, until ctx ends
//	err = st.Stop(context.Background())
//
// # What runs where
//
// Everything listens on 127.0.0.1, on fixed ports so that the commands the
// banner prints work from run to run (Config.Ports; DefaultPorts(base)
// shifts them all; base 0 takes free ports):
//
//	PostgreSQL      a throwaway cluster from the machine's binaries
//	                (internal/pgcluster) in Dir/pg, free port; or Config.DatabaseURL
//	Kafka           in-process kfake (internal/kafka), free port, longhaul's
//	                topics with 8 partitions; or Config.KafkaBrokers
//	primary         7400 gRPC, 7401 HTTP (/metrics, /healthz, /readyz)
//	region eu       near the primary: its edges ship through a 2ms link
//	  edge eu-1     7300 gRPC, 7301 HTTP (/v1/insights:push, /v1/budget,
//	                /v1/topology, /metrics, /ui), 7946 gossip
//	  edge eu-2     7310, 7311, 7947
//	  checkers      fast and slow lane, 7600 HTTP (/metrics)
//	region us       far: its edge ships through an 80ms link
//	  edge us-1     7320, 7321, 7948
//	  checkers      fast and slow lane, 7610 HTTP (/metrics)
//	scheduler       7500 HTTP (POST /v1/assets, POST /v1/scans, /metrics)
//
// The links are in-process toxiproxy proxies (internal/wan) between an
// edge and the primary: only shipping crosses the "WAN"; the checkers of a
// region push to their own region's edges (a topology.Picker with the
// region), and the edges gossip on loopback. The lanes' consumer groups
// are global, as in production: the checkers of both regions share each
// lane's partitions, so both regions scan.
//
// The scheduler gets Config.Assets synthetic assets (the synthetic check:
// made-up findings and durations, a share of them slow) in one account per
// 100, spread over the plans, plus Config.BigAssets "big-N" assets that
// report N insights per scan (large batches: the COPY path). Every plan's
// interval is Config.Interval (2m), and a new asset's first scan falls at
// random within it, so scans flow at once.
//
// # Lifetime
//
// Start starts the pieces in dependency order and undoes what it started
// if one fails. Stop goes the other way: the scheduler, the checkers
// (running scans get AbandonAfter to finish and push), the edges once
// their WALs are shipped (DrainTimeout), the links, the primary, Kafka and
// PostgreSQL; then it removes Dir, unless Config.Keep or a Dir of the
// caller's. The pieces' logs go to Config.Logger and, from info up, to
// Dir/longhaul.log.
//
// # TLS
//
// With Config.TLS the stack makes a development CA and a certificate per
// role in Dir/certs (tlsconf.WriteDev) and serves with them every listener
// that takes a tls.Config: the primary's (mutual TLS: the edges present
// edge.pem) and the scheduler's. The edges' own listeners follow once the
// edge serves TLS (see edgeServesTLS).
package devstack

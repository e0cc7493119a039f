// Package pgcluster starts a throwaway PostgreSQL cluster from the machine's
// server binaries (initdb, postgres), for `longhaul primary` without
// --database-url, `longhaul dev` and the tests (through internal/pgtest).
//
// Start finds the binaries (PATH first, then the highest version under
// /usr/lib/postgresql/*/bin), runs initdb into a directory of its own and
// starts postgres listening on 127.0.0.1:port and on a unix socket in a short
// directory, then creates the database "longhaul". Authentication is trust:
// the cluster is for one machine, never for a network.
//
// PostgreSQL refuses to run as root. Run as root (CI), Start hands the
// directory to the `postgres` user and runs initdb and postgres with that
// user's uid and gid (SysProcAttr.Credential); the user comes with the
// Debian package (apt-get install -y postgresql).
//
// Settings are those of a development or test box, with durability left as
// in production so that benchmarks stay honest: fsync on, synchronous_commit
// on, max_connections 200, shared_buffers 128MB. The server log goes to
// postgres.log in the cluster's directory.
//
// # Directory layout
//
//	Dir/
//	  data/          the data directory (initdb); reused when it already
//	                 holds a cluster, so Options{Dir: d, Keep: true} persists
//	  postgres.log   the server's stderr, appended across restarts
//	  .s.PGSQL.PORT  the unix socket, when Dir is short enough; otherwise the
//	                 socket lives in a separate short directory under /tmp
//
// # Lifetime
//
// postgres runs as a child process of the caller, in its own process group
// (a Ctrl-C in the terminal reaches the caller, which then calls Stop), with
// a parent-death signal: if the calling process dies without calling Stop
// (a panic, os.Exit, SIGKILL), the kernel kills the postmaster and its
// backends exit on their own. What stays behind in that case is the
// directory: Stop is what removes it. Stop is safe to call twice.
package pgcluster

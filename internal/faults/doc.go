// Package faults holds longhaul's fault matrix: tests that break one thing
// at a time under a steady load of pushes (real PostgreSQL, real gRPC on
// loopback, real processes, toxiproxy for the links) and check afterwards,
// and during the fault, that the contracts of the README's "Guarantees"
// held. The package has no code of its own; everything is in its tests.
//
// Every test counts what it did (kills, restarts, resets, injected errors,
// refusals, records and rows checked, recovery times) and logs the counts in
// one line starting "faults:", so that they can be quoted:
//
//	go test -race -count=1 -v ./internal/faults/ | grep 'faults:'
//
// # The matrix
//
// Each test's name says what passing means; its comment says it in full.
//
//	primary SIGKILLed mid-apply, restarted (child process)  TestPrimarySIGKILLMidApplyLosesNothingAndAppliesOnce
//	PostgreSQL stopped immediately, restarted              TestPostgresImmediateStopLosesNoBatchAndRecoversWithoutRestarts
//	COPY to PostgreSQL cut mid-stream                      TestCopyCutMidStreamIsRetriedAndAppliedOnce/{reset,limit_data_upstream}
//	pool exhausted behind a slow database                  TestPoolExhaustedBehindSlowDatabaseStallsNoShipper
//	edge-primary link: latency with jitter, bandwidth,     TestWANFaultsLoseNothingApplyOnceAndRecover/{latency_jitter,
//	blackhole, reset mid-batch, tiny segments, the ack       bandwidth,blackhole,reset_mid_batch,slicer,ack_lost_after_commit}
//	lost after the commit
//	checker clocks minutes off; order of arrival           TestClockSkewedCheckersAndOrderOfArrival
//	disk full (ENOSPC) under the edge's WAL                TestDiskFullUnderTheWALRefusesPushesAndShipsWhatItAcknowledged
//	WAL quota reached while shipping is slow               TestWALQuotaRefusesWithoutLossAndRecoversAsTheShipperDrains
//
// The checks they share: every acknowledged insight (push answered OK, its
// sequence numbers noted) is in the primary exactly once per edge sequence:
// the scans table counts each insight of a scan once per application, and
// every push is a scan of its own, so a batch applied twice would count
// twice; and the insights table is what last-writer-wins makes of the
// acknowledged insights. A "probe" pauses the pushes, reads the ledger, the
// scans and the insights in one REPEATABLE READ snapshot, and checks that
// the tables are exactly the effect of each edge's sequence prefix up to its
// ledger: a partial batch, a batch applied twice or a lost one shows there.
//
// # Short and long form
//
// By default the tests run a short form, bounded in counts and time, for CI
// (the whole package in about a minute on two idle cores with -race; three
// at most). With LONGHAUL_FAULTS_LONG=1 they run the long form: more kills,
// restarts and cuts, longer faults (a blackhole longer than the shipper's
// keepalive), in about seven minutes on two idle cores, twenty on a busy
// machine.
//
// The test that stops PostgreSQL (pgtest.Cluster) does not run in parallel
// with the others of the binary; all the others do.
//
// # Debugging
//
// The services under test log nothing unless LONGHAUL_FAULTS_DEBUG is set
// (then their warnings and errors go to stderr). LONGHAUL_FAULTS_TRACE
// prints the edges' WAL and shipper state every second while a test waits
// for a backlog to drain. A test that finds a component stuck (no recovery
// within its bound) writes every goroutine's stack to a file in the
// temporary directory and logs its name.
package faults

//go:build race

package edge

// raceEnabled: the race detector slows everything 5–10×, so tests whose
// point is a latency behaviour (a budget held) run only without it.
const raceEnabled = true

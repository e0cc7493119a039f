package edge

import (
	"os"
	"testing"

	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/internal/wan"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		// This test binary, started by a test, runs an edge until killed.
		os.Exit(runChildEdge(os.Getenv(childEnv)))
	}
	pgtest.Main(m, wan.LeakOptions()...)
}

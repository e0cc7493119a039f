package pushclient

import (
	"testing"

	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/internal/wan"
)

func TestMain(m *testing.M) { pgtest.Main(m, wan.LeakOptions()...) }

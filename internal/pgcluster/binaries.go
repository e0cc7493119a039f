package pgcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// ErrNotInstalled means the PostgreSQL server binaries are not on this
// machine. The error Start returns wraps it and says how to install them.
var ErrNotInstalled = errors.New("pgcluster: PostgreSQL server binaries (initdb, postgres) not found")

// installHint is what to do about ErrNotInstalled.
const installHint = "looked on PATH and in /usr/lib/postgresql/*/bin; " +
	"install them with `apt-get install -y postgresql`, " +
	"or use a running server instead: --database-url for longhaul, LONGHAUL_TEST_DATABASE_URL for the tests"

// debianBinGlob is where Debian and Ubuntu install each major version (a
// variable for the tests).
var debianBinGlob = "/usr/lib/postgresql/*/bin"

// findBinDir returns the directory that holds initdb and postgres.
func findBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		// /usr/local/bin/initdb may be a symlink; postgres sits beside the target.
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		if dir := filepath.Dir(p); hasServer(dir) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob(debianBinGlob)
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, dir := range dirs {
		if hasServer(dir) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("%w: %s", ErrNotInstalled, installHint)
}

func hasServer(dir string) bool {
	return isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "postgres"))
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// versionOf reads the major version from /usr/lib/postgresql/<version>/bin
// ("9.6" sorts below "10").
func versionOf(binDir string) float64 {
	v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	if err != nil {
		return -1
	}
	return v
}

// serverUser is whom initdb and postgres run as: nil for the current user,
// the `postgres` user when the current user is root (PostgreSQL refuses root).
func serverUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: PostgreSQL refuses to run as root and there is no `postgres` user to run it as "+
			"(`apt-get install -y postgresql` creates one, so does `useradd --system postgres`): %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: user postgres: uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: user postgres: gid %q: %w", u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// serverEnv is the environment of initdb and postgres: the caller's, without
// the PG* variables meant for clients (PGDATA, PGPORT, PGHOST, …), in the C
// locale.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "LANG=C")
}

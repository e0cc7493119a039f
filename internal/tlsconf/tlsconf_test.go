package tlsconf

import (
	"crypto/tls"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// handshake serves one TLS connection with srv and dials it with cli.
func handshake(t *testing.T, srv, cli *tls.Config) error {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		err = c.(*tls.Conn).Handshake()
		if err == nil {
			_, err = c.Write([]byte("ok"))
		}
		done <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), cli)
	if err == nil {
		_, err = io.ReadAll(io.LimitReader(c, 2))
		c.Close()
	}
	serr := <-done
	if err != nil {
		return err
	}
	return serr
}

func TestMutualTLSAcceptsOnlyTheCAsCertificates(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	if _, err := WriteDev(dir, DevOptions{Hosts: []string{"edge.example"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteDev(other, DevOptions{}); err != nil {
		t.Fatal(err)
	}
	f := func(d, role string) string { return filepath.Join(d, role) }
	srv, err := Flags{Cert: f(dir, "primary.pem"), Key: f(dir, "primary-key.pem"), ClientCA: f(dir, "ca.pem")}.Server()
	if err != nil {
		t.Fatal(err)
	}
	good, err := Flags{CA: f(dir, "ca.pem"), Cert: f(dir, "edge.pem"), Key: f(dir, "edge-key.pem")}.Client()
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, srv, good); err != nil {
		t.Fatalf("an edge with the CA's certificate: %v", err)
	}
	noCert, _ := Flags{CA: f(dir, "ca.pem")}.Client()
	if err := handshake(t, srv, noCert); err == nil {
		t.Fatal("a client without a certificate was accepted")
	}
	stranger, _ := Flags{CA: f(dir, "ca.pem"), Cert: f(other, "edge.pem"), Key: f(other, "edge-key.pem")}.Client()
	if err := handshake(t, srv, stranger); err == nil {
		t.Fatal("a certificate from another CA was accepted")
	}
	wrongCA, _ := Flags{CA: f(other, "ca.pem"), Cert: f(dir, "edge.pem"), Key: f(dir, "edge-key.pem")}.Client()
	if err := handshake(t, srv, wrongCA); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a server certificate from an unknown CA: %v", err)
	}
}

func TestFlagsRefuseHalfConfigurations(t *testing.T) {
	for _, f := range []Flags{{Cert: "x"}, {Key: "x"}, {ClientCA: "ca.pem"}} {
		if _, err := f.Server(); err == nil {
			t.Errorf("%+v accepted", f)
		}
	}
	if c, err := (Flags{}).Server(); c != nil || err != nil {
		t.Fatalf("no flags: %v %v", c, err)
	}
	if _, err := (Flags{CA: "/nonexistent/ca.pem"}).Client(); err == nil || !strings.Contains(err.Error(), "--tls-ca") {
		t.Fatalf("missing CA file: %v", err)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("not pem"), 0o600)
	if _, err := (Flags{CA: bad}).Client(); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("bad CA file: %v", err)
	}
}

func TestWriteDevRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	files, err := WriteDev(dir, DevOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2+2*len(Roles) {
		t.Fatalf("%d files", len(files))
	}
	if st, _ := os.Stat(filepath.Join(dir, "ca-key.pem")); st.Mode().Perm() != 0o600 {
		t.Fatalf("ca-key.pem mode %v", st.Mode())
	}
	if _, err := WriteDev(dir, DevOptions{}); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second run: %v", err)
	}
	if _, err := WriteDev(dir, DevOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
}

func TestCertificateIsReadAgainWhenItChanges(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	WriteDev(a, DevOptions{})
	WriteDev(b, DevOptions{})
	dir := t.TempDir()
	cp := func(from, name string) {
		data, _ := os.ReadFile(filepath.Join(from, name))
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cp(a, "edge.pem")
	cp(a, "edge-key.pem")
	kp, err := newKeyPair(filepath.Join(dir, "edge.pem"), filepath.Join(dir, "edge-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	first, _ := kp.get()
	cp(b, "edge.pem")
	cp(b, "edge-key.pem")
	kp.mu.Lock()
	kp.checked, kp.mtime = kp.checked.Add(-2e9), kp.mtime.Add(-2e9) // as if a second passed and the files are newer
	kp.mu.Unlock()
	second, _ := kp.get()
	if string(first.Certificate[0]) == string(second.Certificate[0]) {
		t.Fatal("the rotated certificate was not picked up")
	}
}

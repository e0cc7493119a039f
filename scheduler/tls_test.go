package scheduler

import (
	"bytes"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/longhaul/longhaul/internal/tlsconf"
)

// With --tls-cert the scheduler's API answers over TLS only.
func TestAPIServesTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := tlsconf.WriteDev(dir, tlsconf.DevOptions{}); err != nil {
		t.Fatal(err)
	}
	srv, err := tlsconf.Flags{Cert: filepath.Join(dir, "scheduler.pem"), Key: filepath.Join(dir, "scheduler-key.pem")}.Server()
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, true, Config{TLS: srv})
	cli, _ := tlsconf.Flags{CA: filepath.Join(dir, "ca.pem")}.Client()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cli}, Timeout: 5 * time.Second}
	body := `{"assets":[{"account_id":"a","asset":"www.example.com","plan":"pro","checks":["tls"]}]}`
	resp, err := hc.Post("https://"+b.svc.HTTPAddr()+"/v1/assets", "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST over TLS: %s", resp.Status)
	}
	resp, err = http.Post("http://"+b.svc.HTTPAddr()+"/v1/assets", "application/json", strings.NewReader(body))
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Fatalf("plain HTTP: %s", resp.Status)
		}
	}
}

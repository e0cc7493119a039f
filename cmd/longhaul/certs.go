package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/longhaul/longhaul/internal/tlsconf"
)

func runCerts(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("longhaul certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		out, hosts string
		o          tlsconf.DevOptions
	)
	fs.StringVar(&out, "out", "certs", "directory to write ca.pem, ca-key.pem and <role>.pem, <role>-key.pem into")
	fs.StringVar(&hosts, "hosts", "", "comma-separated extra host names or IPs for every certificate (besides localhost, 127.0.0.1, ::1 and the role's name)")
	fs.DurationVar(&o.Valid, "valid", 365*24*time.Hour, "how long the certificates are valid")
	fs.BoolVar(&o.Force, "force", false, "overwrite existing files")
	if err := parse(fs, args); err != nil {
		return err
	}
	o.Hosts = splitList(hosts)
	files, err := tlsconf.WriteDev(out, o)
	if err != nil {
		return err
	}
	for _, f := range files {
		fmt.Fprintln(stdout, f)
	}
	fmt.Fprintf(stdout, "a development CA and a certificate per role (%v); for development only\n", tlsconf.Roles)
	return nil
}

package pushclient_test

import (
	"context"
	"errors"
	"log"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/pushclient"
)

// A checker pushes a scan's insights to the edges of its region, then
// completes the scan.
func ExampleClient_Push() {
	c, err := pushclient.New(pushclient.Config{Edges: []string{"edge-a.eu:7300", "edge-b.eu:7300"}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	started := time.Now()
	insights := []*longhaulv1.Insight{{
		AccountId: "acme", Asset: "www.example.com", Kind: "tls.expiry", Subject: "443",
		Severity: longhaulv1.Severity_HIGH, ObservedAt: timestamppb.Now(), ScanId: "scan-1", Checker: "tls",
	}}
	res, err := c.Push(ctx, insights)
	var bad *pushclient.InputError
	switch {
	case errors.As(err, &bad):
		log.Fatalf("insight %d is invalid: %v", bad.Index, bad) // sending it again would not help
	case err != nil:
		log.Fatal(err) // ctx ended before an edge acknowledged everything
	}
	log.Printf("%d insights durable on %v", res.Accepted, res.Edges)

	err = c.Complete(ctx, &longhaulv1.ScanCompletion{ScanId: "scan-1", AccountId: "acme", Asset: "www.example.com",
		Checker: "tls", InsightCount: int64(len(insights)), StartedAt: timestamppb.New(started)})
	if err != nil {
		log.Fatal(err)
	}
}

// A checker whose scan finds insights over minutes hands them over as it
// finds them: by the end of the scan most are durable already, and Close
// waits only for the last segments.
func ExampleClient_NewWriter() {
	c, err := pushclient.New(pushclient.Config{Edges: []string{"edge-a.eu:7300", "edge-b.eu:7300"}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	found := make(chan *longhaulv1.Insight) // the scan's findings, closed at its end

	started := time.Now()
	w := c.NewWriter(pushclient.WriterConfig{})
	for in := range found {
		if err := w.Write(ctx, in); err != nil {
			break // the Writer failed: Close says why, and what is durable
		}
	}
	res, err := w.Close(ctx) // nil: every insight written is durable
	if err != nil {
		log.Fatalf("%d insights durable: %v", res.Accepted, err)
	}
	err = c.Complete(ctx, &longhaulv1.ScanCompletion{ScanId: "scan-1", AccountId: "acme", Asset: "www.example.com",
		Checker: "tls", InsightCount: int64(res.Accepted), StartedAt: timestamppb.New(started)})
	if err != nil {
		log.Fatal(err)
	}
}

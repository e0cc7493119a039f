// Command gzipprimary is a shipping endpoint as a primary older than
// zstd shipping was: a gRPC server without the zstd compressor, which
// acknowledges every batch as applied, in order. It listens on -listen
// (any port of 127.0.0.1 by default), prints its address on stdout and
// serves until killed. The edge's tests start it to check that a
// shipper falls back to gzip; it must not import anything that registers
// zstd (edge, primary, internal/zstdgrpc).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/gzip"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

type shipper struct {
	longhaulv1.UnimplementedShipperServer
}

func (shipper) Ship(stream longhaulv1.Shipper_ShipServer) error {
	var applied uint64
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var resp *longhaulv1.ShipResponse
		switch k := m.Kind.(type) {
		case *longhaulv1.ShipRequest_Hello:
			resp = &longhaulv1.ShipResponse{Kind: &longhaulv1.ShipResponse_Welcome{Welcome: &longhaulv1.Welcome{AppliedSeq: applied}}}
		case *longhaulv1.ShipRequest_Batch:
			status := longhaulv1.Ack_APPLIED
			switch {
			case k.Batch.LastSeq <= applied:
				status = longhaulv1.Ack_DUPLICATE
			case k.Batch.FirstSeq != applied+1:
				status = longhaulv1.Ack_OUT_OF_SEQUENCE
			default:
				applied = k.Batch.LastSeq
			}
			resp = &longhaulv1.ShipResponse{Kind: &longhaulv1.ShipResponse_Ack{Ack: &longhaulv1.Ack{
				Status: status, FirstSeq: k.Batch.FirstSeq, LastSeq: k.Batch.LastSeq, AppliedSeq: applied}}}
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

func main() {
	if encoding.GetCompressor("zstd") != nil {
		fmt.Fprintln(os.Stderr, "gzipprimary: zstd is registered: something imported it")
		os.Exit(2)
	}
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gzipprimary:", err)
		os.Exit(1)
	}
	srv := grpc.NewServer()
	longhaulv1.RegisterShipperServer(srv, shipper{})
	fmt.Println(lis.Addr())
	if err := srv.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, "gzipprimary:", err)
		os.Exit(1)
	}
}

package edge

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/wire"
)

// The payload of a WAL record is a longhaul.v1.WalRecord in protobuf
// (api/longhaul/v1/record.proto): one per accepted insight or completion.

// EncodeInsight returns the WAL payload of an accepted insight: the bytes
// proto.Marshal writes for it, written without reflection
// (wire.AppendInsightRecord).
func EncodeInsight(in *longhaulv1.BatchInsight) ([]byte, error) {
	return wire.AppendInsightRecord(make([]byte, 0, wire.InsightRecordSize(in)), in), nil
}

// EncodeCompletion returns the WAL payload of an accepted scan completion.
func EncodeCompletion(c *longhaulv1.ScanCompletion) ([]byte, error) {
	return proto.Marshal(&longhaulv1.WalRecord{Kind: &longhaulv1.WalRecord_Completion{Completion: c}})
}

// ErrBadRecord is returned for a WAL payload that is not a record this
// version of longhaul wrote.
var ErrBadRecord = errors.New("edge: bad WAL record")

// DecodeRecord decodes a WAL payload. It never panics; a payload that is
// not protobuf, or holds neither an insight nor a completion, is an
// ErrBadRecord.
func DecodeRecord(payload []byte) (*longhaulv1.WalRecord, error) {
	var r longhaulv1.WalRecord
	if err := proto.Unmarshal(payload, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	switch r.Kind.(type) {
	case *longhaulv1.WalRecord_Insight, *longhaulv1.WalRecord_Completion:
		return &r, nil
	}
	return nil, fmt.Errorf("%w: neither an insight nor a completion", ErrBadRecord)
}

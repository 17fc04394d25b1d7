package schemas

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
)

// Header names of the record envelope. They follow the CloudEvents Kafka
// protocol binding (binary mode): ce_* attributes in headers, the protobuf
// message as the value. tenant, callid and schemaversion are CloudEvents
// extension attributes; traceparent is W3C trace context.
const (
	HeaderSpecVersion   = "ce_specversion"
	HeaderID            = "ce_id"
	HeaderType          = "ce_type"
	HeaderSource        = "ce_source"
	HeaderTime          = "ce_time"
	HeaderSchemaVersion = "ce_schemaversion"
	HeaderTenant        = "ce_tenant"
	HeaderCallID        = "ce_callid"
	HeaderTraceParent   = "ce_traceparent"
	HeaderContentType   = "content-type"
)

// ContentType is the content-type header of every Verbatim record value.
const ContentType = "application/x-protobuf"

// SchemaVersion is the version of the messages in package verbatimv1.
const SchemaVersion = 1

// ErrEnvelope is wrapped by every envelope decoding error.
var ErrEnvelope = errors.New("invalid record envelope")

// Envelope is the metadata every Verbatim record carries in its headers.
type Envelope struct {
	// ID is unique per event (a UUID); consumers deduplicate on it.
	ID string
	// Type is the fully qualified protobuf message name of the value,
	// e.g. "verbatim.v1.CallStarted".
	Type string
	// SchemaVersion of Type; SchemaVersion for this package.
	SchemaVersion int
	// Tenant owns the event. Required.
	Tenant string
	// CallID is set on call-scoped events.
	CallID string
	// OccurredAt is when the event happened, not when it was produced.
	OccurredAt time.Time
	// Producer identifies the writer, e.g. "verbatim-ingest/host-1".
	Producer string
	// TraceParent is a W3C traceparent, if the event is traced.
	TraceParent string
}

// Validate reports missing required fields.
func (e Envelope) Validate() error {
	var errs []error
	if e.ID == "" {
		errs = append(errs, fmt.Errorf("%w: missing %s", ErrEnvelope, HeaderID))
	}
	if e.Type == "" {
		errs = append(errs, fmt.Errorf("%w: missing %s", ErrEnvelope, HeaderType))
	}
	if e.Tenant == "" {
		errs = append(errs, fmt.Errorf("%w: missing %s", ErrEnvelope, HeaderTenant))
	}
	if e.SchemaVersion <= 0 {
		errs = append(errs, fmt.Errorf("%w: bad %s %d", ErrEnvelope, HeaderSchemaVersion, e.SchemaVersion))
	}
	if e.OccurredAt.IsZero() {
		errs = append(errs, fmt.Errorf("%w: missing %s", ErrEnvelope, HeaderTime))
	}
	return errors.Join(errs...)
}

// AppendHeaders appends the envelope's headers to dst.
func (e Envelope) AppendHeaders(dst []kgo.RecordHeader) []kgo.RecordHeader {
	h := func(k, v string) {
		if v != "" {
			dst = append(dst, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
	}
	h(HeaderSpecVersion, "1.0")
	h(HeaderID, e.ID)
	h(HeaderType, e.Type)
	h(HeaderSource, e.Producer)
	h(HeaderTime, e.OccurredAt.UTC().Format(time.RFC3339Nano))
	h(HeaderSchemaVersion, strconv.Itoa(e.SchemaVersion))
	h(HeaderTenant, e.Tenant)
	h(HeaderCallID, e.CallID)
	h(HeaderTraceParent, e.TraceParent)
	h(HeaderContentType, ContentType)
	return dst
}

// ParseHeaders reads an Envelope from record headers and validates it.
// Unknown headers are ignored, so producers may add their own.
func ParseHeaders(headers []kgo.RecordHeader) (Envelope, error) {
	var e Envelope
	var errs []error
	for _, h := range headers {
		v := string(h.Value)
		switch h.Key {
		case HeaderID:
			e.ID = v
		case HeaderType:
			e.Type = v
		case HeaderSource:
			e.Producer = v
		case HeaderTime:
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%w: %s %q: %w", ErrEnvelope, HeaderTime, v, err))
			}
			e.OccurredAt = t
		case HeaderSchemaVersion:
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%w: %s %q: %w", ErrEnvelope, HeaderSchemaVersion, v, err))
			}
			e.SchemaVersion = n
		case HeaderTenant:
			e.Tenant = v
		case HeaderCallID:
			e.CallID = v
		case HeaderTraceParent:
			e.TraceParent = v
		}
	}
	if len(errs) > 0 {
		return e, errors.Join(errs...)
	}
	return e, e.Validate()
}

// HeaderValue returns the value of the first header named key, or nil;
// for hot paths that need one header without parsing (or allocating) the
// rest. Use ParseHeaders to validate a record.
func HeaderValue(headers []kgo.RecordHeader, key string) []byte {
	for i := range headers {
		if headers[i].Key == key {
			return headers[i].Value
		}
	}
	return nil
}

// NewRecord encodes m as a record for topic with key, setting env.Type to
// m's message name and env.SchemaVersion to SchemaVersion when unset. It
// validates the envelope, so no record leaves without tenant and id.
func NewRecord(topic string, key []byte, env Envelope, m proto.Message) (*kgo.Record, error) {
	return NewRecordAppend(topic, key, env, m, nil)
}

// NewRecordAppend is NewRecord marshalling the value into dst[:0]'s
// space, for callers that reuse buffers once a record is produced.
func NewRecordAppend(topic string, key []byte, env Envelope, m proto.Message, dst []byte) (*kgo.Record, error) {
	env.Type = string(m.ProtoReflect().Descriptor().FullName())
	if env.SchemaVersion == 0 {
		env.SchemaVersion = SchemaVersion
	}
	if err := env.Validate(); err != nil {
		return nil, err
	}
	val, err := proto.MarshalOptions{}.MarshalAppend(dst[:0], m)
	if err != nil {
		return nil, fmt.Errorf("schemas: encode %s: %w", env.Type, err)
	}
	return &kgo.Record{Topic: topic, Key: key, Value: val, Headers: env.AppendHeaders(nil)}, nil
}

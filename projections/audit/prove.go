package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// InclusionProof proves one entry is in a tenant's log at a signed size.
// Everything needed to check it offline is in it, but the verifier key.
type InclusionProof struct {
	Tenant   string `json:"tenant"`
	Index    int64  `json:"index"`
	EventID  string `json:"event_id,omitempty"`
	Leaf     []byte `json:"leaf"` // the event's bytes (protobuf AuditEvent)
	TreeSize int64  `json:"tree_size"`
	// Checkpoint is the signed note of that size.
	Checkpoint string   `json:"checkpoint"`
	Proof      [][]byte `json:"proof"` // RFC 6962 audit path, leaf to root
	// Event and Recording show the leaf decoded (not part of the proof).
	Event     map[string]any `json:"event,omitempty"`
	Recording map[string]any `json:"recording,omitempty"`
}

// ConsistencyProof proves a tenant's log of size Old is a prefix of the
// log of size New, both signed.
type ConsistencyProof struct {
	Tenant        string   `json:"tenant"`
	Old           int64    `json:"old_size"`
	New           int64    `json:"new_size"`
	OldCheckpoint string   `json:"old_checkpoint"`
	NewCheckpoint string   `json:"new_checkpoint"`
	Proof         [][]byte `json:"proof"`
}

// hashReader reads tenant's stored hashes from the table.
func hashReader(ctx context.Context, conn driver.Conn, db, tenant string) tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		return readStoredHashes(ctx, conn, db, tenant, indexes)
	})
}

// signedAt is the latest signed checkpoint of tenant at least size in
// size (size 0: the latest), its note text and size.
func signedAt(ctx context.Context, conn driver.Conn, db, tenant string, size int64, exact bool) (string, int64, error) {
	cond, args := "size >= ?", []any{tenant, uint64(size)}
	if exact {
		cond = "size = ?"
	}
	rows, err := conn.Query(ctx, "SELECT size, note FROM `"+db+"`.audit_checkpoints WHERE tenant = ? AND "+cond+" ORDER BY size DESC LIMIT 1", args...)
	if err != nil {
		return "", 0, err
	}
	defer rows.Close()
	if !rows.Next() {
		if exact {
			return "", 0, fmt.Errorf("audit: tenant %s has no signed checkpoint of size %d", tenant, size)
		}
		return "", 0, fmt.Errorf("audit: tenant %s has no signed checkpoint covering entry %d yet (one is written at least every minute)", tenant, size-1)
	}
	var n uint64
	var signed string
	if err := rows.Scan(&n, &signed); err != nil {
		return "", 0, err
	}
	return signed, int64(n), nil
}

// Prove returns the inclusion proofs of the entries of tenant with event
// id (usually one) in its latest signed checkpoint.
func Prove(ctx context.Context, conn driver.Conn, db, tenant, eventID string) ([]InclusionProof, error) {
	return proveWhere(ctx, conn, db, tenant, "event_id = ?", eventID)
}

// ProveRecording returns the inclusion proofs of the recordings stored
// for a call (recording.stored entries: the chain of custody).
func ProveRecording(ctx context.Context, conn driver.Conn, db, tenant, callID string) ([]InclusionProof, error) {
	return proveWhere(ctx, conn, db, tenant, "action = 'recording.stored' AND call_id = ?", callID)
}

func proveWhere(ctx context.Context, conn driver.Conn, db, tenant, cond string, arg any) ([]InclusionProof, error) {
	rows, err := conn.Query(ctx, "SELECT idx, leaf, event_id FROM `"+db+"`.audit_log WHERE tenant = ? AND "+cond+" ORDER BY idx LIMIT 100", tenant, arg)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	var out []InclusionProof
	for rows.Next() {
		var idx uint64
		var leaf, id string
		if err := rows.Scan(&idx, &leaf, &id); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, InclusionProof{Tenant: tenant, Index: int64(idx), Leaf: []byte(leaf), EventID: id})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("audit: tenant %s's log has no such entry", tenant)
	}
	last := out[len(out)-1].Index
	signed, size, err := signedAt(ctx, conn, db, tenant, last+1, false)
	if err != nil {
		return nil, err
	}
	hr := hashReader(ctx, conn, db, tenant)
	for i := range out {
		p, err := tlog.ProveRecord(size, out[i].Index, hr)
		if err != nil {
			return nil, fmt.Errorf("audit: prove entry %d: %w", out[i].Index, err)
		}
		out[i].TreeSize, out[i].Checkpoint = size, signed
		for _, h := range p {
			out[i].Proof = append(out[i].Proof, bytes.Clone(h[:]))
		}
		ev := &verbatimv1.AuditEvent{}
		if proto.Unmarshal(out[i].Leaf, ev) == nil {
			rec := ev.GetRecording()
			ev.Recording = nil
			out[i].Event = asJSON(ev)
			if rec != nil {
				out[i].Recording = asJSON(rec)
			}
		}
	}
	return out, nil
}

func asJSON(m proto.Message) map[string]any {
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil
	}
	return v
}

// Consistency proves that tenant's signed log of size old is a prefix of
// its signed log of size new.
func Consistency(ctx context.Context, conn driver.Conn, db, tenant string, old, new int64) (ConsistencyProof, error) {
	if old <= 0 || new < old {
		return ConsistencyProof{}, fmt.Errorf("audit: sizes %d and %d: 0 < OLD <= NEW", old, new)
	}
	o, _, err := signedAt(ctx, conn, db, tenant, old, true)
	if err != nil {
		return ConsistencyProof{}, err
	}
	n, _, err := signedAt(ctx, conn, db, tenant, new, true)
	if err != nil {
		return ConsistencyProof{}, err
	}
	p, err := tlog.ProveTree(new, old, hashReader(ctx, conn, db, tenant))
	if err != nil {
		return ConsistencyProof{}, fmt.Errorf("audit: prove %d in %d: %w", old, new, err)
	}
	cp := ConsistencyProof{Tenant: tenant, Old: old, New: new, OldCheckpoint: o, NewCheckpoint: n}
	for _, h := range p {
		cp.Proof = append(cp.Proof, bytes.Clone(h[:]))
	}
	return cp, nil
}

// ErrProof is the error of every proof that does not check.
var ErrProof = errors.New("audit: proof refused")

// openCheckpoint verifies a signed checkpoint of tenant's log.
func openCheckpoint(signed, tenant string, v note.Verifier) (*log.Checkpoint, error) {
	cp, _, _, err := log.ParseCheckpoint([]byte(signed), Origin(tenant), v)
	if err != nil {
		return nil, fmt.Errorf("%w: checkpoint: %v", ErrProof, err)
	}
	return cp, nil
}

// CheckInclusion checks an inclusion proof offline, with the verifier
// key of the log's signer: the checkpoint's signature and origin, its
// size, and the audit path from the leaf to its root, by
// transparency-dev/merkle (not the code that made the proof).
func CheckInclusion(p InclusionProof, v note.Verifier) error {
	cp, err := openCheckpoint(p.Checkpoint, p.Tenant, v)
	if err != nil {
		return err
	}
	if int64(cp.Size) != p.TreeSize || p.TreeSize <= 0 || p.Index < 0 || p.Index >= p.TreeSize {
		return fmt.Errorf("%w: entry %d of a tree of size %d, checkpoint of size %d", ErrProof, p.Index, p.TreeSize, cp.Size)
	}
	for _, h := range p.Proof {
		if len(h) != rfc6962.DefaultHasher.Size() {
			return fmt.Errorf("%w: a proof hash of %d bytes", ErrProof, len(h))
		}
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(p.Index), uint64(p.TreeSize), rfc6962.DefaultHasher.HashLeaf(p.Leaf), p.Proof, cp.Hash); err != nil {
		return fmt.Errorf("%w: %v", ErrProof, err)
	}
	return nil
}

// CheckConsistency checks a consistency proof offline: both checkpoints
// signed, of the sizes it names, and the proof between their roots, by
// transparency-dev/merkle.
func CheckConsistency(p ConsistencyProof, v note.Verifier) error {
	o, err := openCheckpoint(p.OldCheckpoint, p.Tenant, v)
	if err != nil {
		return err
	}
	n, err := openCheckpoint(p.NewCheckpoint, p.Tenant, v)
	if err != nil {
		return err
	}
	if int64(o.Size) != p.Old || int64(n.Size) != p.New || p.Old <= 0 || p.New < p.Old {
		return fmt.Errorf("%w: sizes %d and %d, checkpoints of %d and %d", ErrProof, p.Old, p.New, o.Size, n.Size)
	}
	for _, h := range p.Proof {
		if len(h) != rfc6962.DefaultHasher.Size() {
			return fmt.Errorf("%w: a proof hash of %d bytes", ErrProof, len(h))
		}
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, o.Size, n.Size, p.Proof, o.Hash, n.Hash); err != nil {
		return fmt.Errorf("%w: %v", ErrProof, err)
	}
	return nil
}

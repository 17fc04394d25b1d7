// Package keyops runs the key-lifecycle jobs over the key registry (the
// compacted keys topic): rewrapping every data key of a tenant to its
// KEK's latest version after a rotation, and checking that none is left
// under the versions to retire.
package keyops

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// Registry is a tenant's data keys as the keys topic holds them now.
type Registry struct {
	Keys []*verbatimv1.DataKey // live (not shredded), by key id
}

// ByVersion counts the keys per KEK version.
func (r Registry) ByVersion() map[uint32]int {
	out := map[uint32]int{}
	for _, k := range r.Keys {
		out[k.GetKekVersion()]++
	}
	return out
}

// Below are the keys under a KEK version below v.
func (r Registry) Below(v uint32) []*verbatimv1.DataKey {
	var out []*verbatimv1.DataKey
	for _, k := range r.Keys {
		if k.GetKekVersion() < v {
			out = append(out, k)
		}
	}
	return out
}

// Read reads the keys topic to its end offsets and returns tenant's live
// data keys.
func Read(ctx context.Context, kcfg kafkaclient.Config, tenant string) (Registry, error) {
	cl, err := kafkaclient.New(kcfg, kafkaclient.FollowOpts(schemas.TopicKeys)...)
	if err != nil {
		return Registry{}, err
	}
	var mu sync.Mutex
	byID := map[string]*verbatimv1.DataKey{}
	f := kafkaclient.Follow(cl, func(rec *kgo.Record) error {
		mu.Lock()
		defer mu.Unlock()
		if rec.Value == nil {
			delete(byID, string(rec.Key))
			return nil
		}
		dk := &verbatimv1.DataKey{}
		if err := proto.Unmarshal(rec.Value, dk); err != nil || dk.GetKeyId() == "" {
			return fmt.Errorf("keyops: not a DataKey: %v", err)
		}
		if dk.GetTenant() == tenant {
			byID[dk.GetKeyId()] = dk
		} else {
			delete(byID, dk.GetKeyId())
		}
		return nil
	}, schemas.TopicKeys)
	defer f.Close()
	if err := f.Sync(ctx); err != nil {
		return Registry{}, fmt.Errorf("keyops: the key registry: %w", err)
	}
	mu.Lock()
	defer mu.Unlock()
	r := Registry{}
	for _, dk := range byID {
		r.Keys = append(r.Keys, dk)
	}
	sort.Slice(r.Keys, func(i, j int) bool { return r.Keys[i].GetKeyId() < r.Keys[j].GetKeyId() })
	return r, nil
}

// RewrapConfig configures a rewrap job.
type RewrapConfig struct {
	Kafka  kafkaclient.Config
	Tenant string
	Keys   keys.Rotator
	// KeyManager names the manager in the records ("vault-transit").
	KeyManager string
	// Batch is the keys rewrapped and produced at once (default 250).
	Batch int
	// Progress, if set, is told after each batch.
	Progress func(RewrapStats)
}

// RewrapStats says how far a job is.
type RewrapStats struct {
	Latest    uint32 // the KEK version keys are rewrapped to
	Total     int    // the tenant's live data keys
	Already   int    // under Latest when the job started
	Rewrapped int
	Remaining int
	Elapsed   time.Duration
}

// Rewrap wraps every live data key of the tenant that is under an older
// KEK version again under the latest, and produces it to the keys topic
// (the same key id: the compacted topic keeps the newest). Each batch's
// produces are acknowledged before the next; a job stopped anywhere is
// resumed by running it again: it reads the registry again and rewraps
// what is still old.
func Rewrap(ctx context.Context, cfg RewrapConfig) (RewrapStats, error) {
	if cfg.Batch <= 0 {
		cfg.Batch = 250
	}
	start := time.Now()
	latest, _, err := cfg.Keys.KEKVersions(ctx, cfg.Tenant)
	if err != nil {
		return RewrapStats{}, err
	}
	reg, err := Read(ctx, cfg.Kafka, cfg.Tenant)
	if err != nil {
		return RewrapStats{}, err
	}
	todo := reg.Below(latest)
	st := RewrapStats{Latest: latest, Total: len(reg.Keys), Already: len(reg.Keys) - len(todo), Remaining: len(todo)}
	if len(todo) == 0 {
		return st, nil
	}
	cl, err := kafkaclient.New(cfg.Kafka)
	if err != nil {
		return st, err
	}
	defer cl.Close()
	for i := 0; i < len(todo); i += cfg.Batch {
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("keyops: rewrap stopped with %d keys to go (run it again to go on): %w", st.Remaining, err)
		}
		batch := todo[i:min(i+cfg.Batch, len(todo))]
		ws := make([]keys.Wrapped, len(batch))
		for j, dk := range batch {
			ws[j] = keys.Wrapped{KEKName: dk.GetKekName(), KEKVersion: dk.GetKekVersion(), Ciphertext: dk.GetWrappedDek()}
		}
		re, err := cfg.Keys.RewrapDataKeys(ctx, cfg.Tenant, ws)
		if err != nil {
			return st, err
		}
		recs := make([]*kgo.Record, len(batch))
		for j, dk := range batch {
			n := proto.CloneOf(dk)
			n.WrappedDek, n.KekName, n.KekVersion = re[j].Ciphertext, re[j].KEKName, re[j].KEKVersion
			if cfg.KeyManager != "" {
				n.KeyManager = cfg.KeyManager
			}
			if recs[j], err = schemas.NewRecord(schemas.TopicKeys, []byte(n.GetKeyId()), schemas.Envelope{ID: schemas.RandomID(), Tenant: cfg.Tenant,
				CallID: n.GetCallId(), OccurredAt: time.Now(), Producer: "verbatim-keys-rewrap"}, n); err != nil {
				return st, err
			}
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return st, fmt.Errorf("keyops: %d rewrapped keys not stored (the old ones still unwrap; run it again): %w", len(recs), err)
		}
		st.Rewrapped += len(batch)
		st.Remaining -= len(batch)
		st.Elapsed = time.Since(start)
		if cfg.Progress != nil {
			cfg.Progress(st)
		}
	}
	st.Elapsed = time.Since(start)
	return st, nil
}

// ErrStillWrapped is the refusal to retire versions that data keys are
// still wrapped under: retiring them would make those recordings
// unreadable.
var ErrStillWrapped = errors.New("keyops: data keys are still wrapped under the versions to retire")

// Retire retires tenant's KEK versions below v, once the registry holds
// no live data key under them (else ErrStillWrapped, with the count).
func Retire(ctx context.Context, kcfg kafkaclient.Config, tenant string, k keys.Rotator, v uint32) (Registry, error) {
	reg, err := Read(ctx, kcfg, tenant)
	if err != nil {
		return reg, err
	}
	if old := reg.Below(v); len(old) > 0 {
		return reg, fmt.Errorf("%w: %d of tenant %s's %d data keys are under versions below %d (run verbatim keys rewrap first)", ErrStillWrapped, len(old), tenant, len(reg.Keys), v)
	}
	return reg, k.RetireKEKVersions(ctx, tenant, v)
}

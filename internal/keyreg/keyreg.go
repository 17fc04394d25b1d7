// Package keyreg follows the keys topic (the key registry) so that a role
// can look up the wrapped data key an event names.
package keyreg

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// ErrShredded is returned for a key whose tombstone has been read: the data
// it protected is erased.
var ErrShredded = errors.New("keyreg: data key shredded")

// ErrNotFound is returned when a key has not been read by the time the
// caller stops waiting.
var ErrNotFound = errors.New("keyreg: data key not found")

// Registry holds the wrapped data keys read so far. It keeps wrapped keys
// only; unwrapping is the caller's, through keys.Manager.
type Registry struct {
	cl      *kgo.Client
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	keys    map[string]*verbatimv1.DataKey // nil value: shredded
	changed chan struct{}                  // closed and replaced on every update
	err     error
	caught  bool // the topic has been read to its end once
}

// Start follows the keys topic from its beginning with cl, which must be a
// client without a group consuming schemas.TopicKeys (read committed). The
// registry owns cl and closes it on Close.
func Start(cl *kgo.Client) *Registry {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Registry{cl: cl, cancel: cancel, done: make(chan struct{}), keys: map[string]*verbatimv1.DataKey{},
		changed: make(chan struct{})}
	go r.run(ctx)
	return r
}

// ConsumeOpts are the options a registry's client needs.
func ConsumeOpts() []kgo.Opt {
	return []kgo.Opt{kgo.ConsumeTopics(schemas.TopicKeys), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}
}

func (r *Registry) run(ctx context.Context) {
	defer close(r.done)
	for {
		// A poll that times out with nothing means the broker had
		// nothing more: the registry has caught up.
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := r.cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		var bad error
		idle := fs.NumRecords() == 0
		fs.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) {
				return
			}
			idle = false
			bad = fmt.Errorf("keyreg: fetch %s/%d: %w", t, p, err)
		})
		r.mu.Lock()
		fs.EachRecord(func(rec *kgo.Record) {
			if rec.Value == nil {
				r.keys[string(rec.Key)] = nil
				return
			}
			dk := &verbatimv1.DataKey{}
			if err := proto.Unmarshal(rec.Value, dk); err != nil || dk.GetKeyId() == "" {
				bad = fmt.Errorf("keyreg: %s/%d offset %d: not a DataKey: %v", rec.Topic, rec.Partition, rec.Offset, err)
				return
			}
			r.keys[dk.GetKeyId()] = dk
		})
		if bad != nil {
			r.err = bad
		}
		r.caught = r.caught || idle
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
	}
}

// Get returns key id's wrapped key for tenant, waiting for it until ctx
// ends (it may still be on its way from another partition).
func (r *Registry) Get(ctx context.Context, tenant, id string) (*verbatimv1.DataKey, error) {
	for {
		r.mu.Lock()
		dk, seen := r.keys[id]
		changed, lastErr := r.changed, r.err
		r.mu.Unlock()
		switch {
		case seen && dk == nil:
			return nil, fmt.Errorf("%w: %s", ErrShredded, id)
		case seen && dk.GetTenant() != tenant:
			return nil, fmt.Errorf("keyreg: key %s belongs to another tenant", id)
		case seen:
			return dk, nil
		}
		select {
		case <-changed:
		case <-r.done:
			return nil, fmt.Errorf("keyreg: closed while waiting for key %s", id)
		case <-ctx.Done():
			if lastErr != nil {
				return nil, fmt.Errorf("%w: %s (%w); last fetch error: %v", ErrNotFound, id, ctx.Err(), lastErr)
			}
			return nil, fmt.Errorf("%w: %s (%w)", ErrNotFound, id, ctx.Err())
		}
	}
}

// CaughtUp reports whether the registry has once read everything the
// broker had: a key missing after that is missing, not late.
func (r *Registry) CaughtUp() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.caught
}

// Close stops following and closes the client.
func (r *Registry) Close() {
	r.cancel()
	<-r.done
	r.cl.Close()
}

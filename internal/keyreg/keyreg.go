// Package keyreg follows the keys topic (the key registry) so that a role
// can look up the wrapped data key an event names.
//
// The registry is rebuilt from the start of the compacted topic every time
// it starts, by a client outside any consumer group: a cache built from a
// compacted topic and consumed through a committed group offset forgets,
// after a restart, every key it read before.
package keyreg

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// ErrShredded is returned for a key whose tombstone has been read: the data
// it protected is erased.
var ErrShredded = errors.New("keyreg: data key shredded")

// ErrNotFound is returned for a key that is not in the registry: the
// registry has read the keys topic up to the end offsets it had when the
// key was asked for, and the key was not there. Writers put a key in the
// registry (acknowledged) before any record that names it, so a reader that
// holds such a record and gets ErrNotFound knows the key is missing, not
// late.
var ErrNotFound = errors.New("keyreg: data key not found")

// ErrOtherTenant is returned for a key that belongs to another tenant than
// the one asking: it is never handed out.
var ErrOtherTenant = errors.New("keyreg: data key belongs to another tenant")

// Registry holds the wrapped data keys read so far. It keeps wrapped keys
// only; unwrapping is the caller's, through keys.Manager. Safe for
// concurrent use.
type Registry struct {
	f  *kafkaclient.Follower
	mu struct {
		sync.Mutex
		keys map[string]*verbatimv1.DataKey // nil value: shredded
	}
}

// Start follows the keys topic from its beginning with cl, a client made
// with ConsumeOpts and no consumer group (read committed). The registry
// owns cl and closes it on Close.
func Start(cl *kgo.Client) *Registry {
	r := &Registry{}
	r.mu.keys = map[string]*verbatimv1.DataKey{}
	r.f = kafkaclient.Follow(cl, r.apply, schemas.TopicKeys)
	return r
}

// ConsumeOpts are the options a registry's client needs: the keys topic
// from its start, with transaction markers delivered so that the registry
// can tell when it has read a partition to its end.
func ConsumeOpts() []kgo.Opt { return kafkaclient.FollowOpts(schemas.TopicKeys) }

func (r *Registry) apply(rec *kgo.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec.Value == nil {
		r.mu.keys[string(rec.Key)] = nil
		return nil
	}
	dk := &verbatimv1.DataKey{}
	if err := proto.Unmarshal(rec.Value, dk); err != nil || dk.GetKeyId() == "" {
		return fmt.Errorf("keyreg: not a DataKey: %v", err)
	}
	r.mu.keys[dk.GetKeyId()] = dk
	return nil
}

// lookup returns id's key if the registry has read it (or its tombstone).
func (r *Registry) lookup(tenant, id string) (*verbatimv1.DataKey, bool, error) {
	r.mu.Lock()
	dk, seen := r.mu.keys[id]
	r.mu.Unlock()
	switch {
	case !seen:
		return nil, false, nil
	case dk == nil:
		return nil, true, fmt.Errorf("%w: %s", ErrShredded, id)
	case dk.GetTenant() != tenant:
		return nil, true, fmt.Errorf("%w: %s", ErrOtherTenant, id)
	}
	return dk, true, nil
}

// Get returns key id's wrapped key for tenant. A key not read yet is looked
// for up to the keys topic's end offsets as they are now (Sync): if it is
// not there, Get returns ErrNotFound. An error that wraps ctx's means the
// registry could not finish reading before ctx ended: nothing is known
// about the key then.
func (r *Registry) Get(ctx context.Context, tenant, id string) (*verbatimv1.DataKey, error) {
	if dk, seen, err := r.lookup(tenant, id); seen {
		return dk, err
	}
	if err := r.Sync(ctx); err != nil {
		return nil, fmt.Errorf("keyreg: key %s: %w", id, err)
	}
	if dk, seen, err := r.lookup(tenant, id); seen {
		return dk, err
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
}

// Sync returns once the registry has read every partition of the keys
// topic up to the end offset it has when Sync is called: every key
// acknowledged to a writer before then is known, and every transaction
// still open below that end has committed or aborted. (Its known limit is
// kafkaclient.Follower.Sync's: every call stored writes the keys topic, so
// only a registry left without writes for longer than its retention of
// markers meets it.)
func (r *Registry) Sync(ctx context.Context) error {
	if err := r.f.Sync(ctx); err != nil {
		return fmt.Errorf("keyreg: registry %w", err)
	}
	return nil
}

// Close stops following and closes the client.
func (r *Registry) Close() { r.f.Close() }

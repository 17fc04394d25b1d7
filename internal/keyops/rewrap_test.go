package keyops_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keyops"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// TestRewrapTenThousandKeys: 10,000 data keys under KEK version 1 (and
// another tenant's, untouched); the KEK rotated; retiring version 1 is
// refused while keys are under it; a rewrap stopped after 3,000 keys
// resumes and finishes; then version 1 is retired, every key unwraps to
// its DEK from the registry, and the old wrapped forms refuse.
func TestRewrapTenThousandKeys(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	kcfg := kafkaclient.Config{Brokers: cluster.ListenAddrs()}
	cl, err := kafkaclient.New(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := kafkaclient.EnsureTopics(ctx, cl, schemas.Topics(), 1); err != nil {
		t.Fatal(err)
	}
	ring, err := keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 10000
	deks := map[string][]byte{}
	old := map[string]keys.Wrapped{}
	var recs []*kgo.Record
	for i := range n + 10 {
		tenant := "demo"
		if i >= n {
			tenant = "acme"
		}
		dk, err := ring.GenerateDataKey(ctx, tenant)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("dk-%s-%05d", tenant, i)
		if tenant == "demo" {
			deks[id], old[id] = dk.Plaintext, dk.Wrapped
		}
		r, err := schemas.NewRecord(schemas.TopicKeys, []byte(id), schemas.Envelope{ID: id, Tenant: tenant, OccurredAt: time.Now()},
			&verbatimv1.DataKey{KeyId: id, Tenant: tenant, WrappedDek: dk.Wrapped.Ciphertext, KekName: dk.Wrapped.KEKName, KekVersion: dk.Wrapped.KEKVersion,
				KeyManager: ring.Kind(), CreatedAt: timestamppb.Now(), Purpose: "call", CallId: fmt.Sprintf("call-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if v, err := ring.RotateKEK(ctx, "demo"); err != nil || v != 2 {
		t.Fatalf("rotate: %d %v", v, err)
	}
	if _, err := keyops.Retire(ctx, kcfg, "demo", ring, 2); !errors.Is(err, keyops.ErrStillWrapped) {
		t.Fatalf("retire before the rewrap: %v, want refused", err)
	}

	// Stopped after 3,000 keys, then run again.
	stop, stopAll := context.WithCancel(ctx)
	defer stopAll()
	st, err := keyops.Rewrap(stop, keyops.RewrapConfig{Kafka: kcfg, Tenant: "demo", Keys: ring, Batch: 500, Progress: func(s keyops.RewrapStats) {
		if s.Rewrapped >= 3000 {
			stopAll()
		}
	}})
	if err == nil || st.Rewrapped != 3000 || st.Remaining != 7000 {
		t.Fatalf("stopped run: %+v %v", st, err)
	}
	start := time.Now()
	st, err = keyops.Rewrap(ctx, keyops.RewrapConfig{Kafka: kcfg, Tenant: "demo", Keys: ring})
	if err != nil || st.Already != 3000 || st.Rewrapped != 7000 || st.Remaining != 0 || st.Total != n {
		t.Fatalf("resumed run: %+v %v", st, err)
	}
	t.Logf("resumed: 7,000 keys rewrapped in %s (%.0f keys/s)", time.Since(start).Round(time.Millisecond), 7000/time.Since(start).Seconds())
	if _, err := keyops.Retire(ctx, kcfg, "demo", ring, 2); err != nil {
		t.Fatalf("retire after the rewrap: %v", err)
	}
	reg, err := keyops.Read(ctx, kcfg, "demo")
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.Keys) != n || reg.ByVersion()[2] != n {
		t.Fatalf("registry: %d keys, by version %v", len(reg.Keys), reg.ByVersion())
	}
	for i, dk := range reg.Keys {
		if i%97 != 0 {
			continue
		}
		got, err := ring.UnwrapDataKey(ctx, "demo", keys.Wrapped{KEKName: dk.GetKekName(), KEKVersion: dk.GetKekVersion(), Ciphertext: dk.GetWrappedDek()})
		if err != nil || !bytes.Equal(got, deks[dk.GetKeyId()]) {
			t.Fatalf("%s: %v", dk.GetKeyId(), err)
		}
		if _, err := ring.UnwrapDataKey(ctx, "demo", old[dk.GetKeyId()]); !errors.Is(err, keys.ErrUnwrap) {
			t.Fatalf("%s: its version-1 form still unwraps: %v", dk.GetKeyId(), err)
		}
	}
	acme, err := keyops.Read(ctx, kcfg, "acme")
	if err != nil || len(acme.Keys) != 10 || acme.ByVersion()[1] != 10 {
		t.Fatalf("the other tenant's keys: %v %v", acme.ByVersion(), err)
	}
}

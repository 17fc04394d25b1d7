package keyreg_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keyreg"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

func TestRegistry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	cfg := kafkaclient.Config{Brokers: cluster.ListenAddrs()}
	prod, err := kafkaclient.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := kafkaclient.EnsureTopics(ctx, prod, schemas.Topics(), 1); err != nil {
		t.Fatal(err)
	}
	put := func(id, tenant string) {
		t.Helper()
		var val []byte
		if tenant != "" {
			val, _ = proto.Marshal(&verbatimv1.DataKey{KeyId: id, Tenant: tenant, WrappedDek: []byte("wrapped")})
		}
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: schemas.TopicKeys, Key: []byte(id), Value: val}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	put("dk-1", "demo")
	put("dk-2", "demo")
	put("dk-2", "") // shredded

	cl, err := kafkaclient.New(cfg, keyreg.ConsumeOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	reg := keyreg.Start(cl)
	defer reg.Close()

	if dk, err := reg.Get(ctx, "demo", "dk-1"); err != nil || string(dk.GetWrappedDek()) != "wrapped" {
		t.Fatalf("dk-1: %v %v", dk, err)
	}
	if _, err := reg.Get(ctx, "acme", "dk-1"); err == nil {
		t.Fatal("another tenant's key was handed out")
	}
	if _, err := reg.Get(ctx, "demo", "dk-2"); !errors.Is(err, keyreg.ErrShredded) {
		t.Fatalf("shredded key: %v", err)
	}
	// A key written later is waited for.
	go func() {
		time.Sleep(200 * time.Millisecond)
		put("dk-3", "demo")
	}()
	if _, err := reg.Get(ctx, "demo", "dk-3"); err != nil {
		t.Fatalf("late key: %v", err)
	}
	// A key that never comes: not found, once the registry has caught up.
	for !reg.CaughtUp() {
		time.Sleep(50 * time.Millisecond)
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if _, err := reg.Get(short, "demo", "dk-never"); !errors.Is(err, keyreg.ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
}

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
	// A key written after the registry started is found: Get reads to the
	// end offsets the topic has when it is asked.
	put("dk-3", "demo")
	if _, err := reg.Get(ctx, "demo", "dk-3"); err != nil {
		t.Fatalf("late key: %v", err)
	}
	// A key that never comes: not found, with no deadline to wait out.
	// The registry reads to the topic's end offsets and stops looking.
	if _, err := reg.Get(ctx, "demo", "dk-never"); !errors.Is(err, keyreg.ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	// Transactions: a key committed in one is found, a key aborted in one
	// is missing, and neither wait hangs on the markers that end them
	// (read committed never shows a marker as a record).
	txn, err := kafkaclient.New(cfg, kgo.TransactionalID("keyreg-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	inTxn := func(id string, commit kgo.TransactionEndTry) {
		t.Helper()
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		val, _ := proto.Marshal(&verbatimv1.DataKey{KeyId: id, Tenant: "demo", WrappedDek: []byte("w")})
		if err := txn.ProduceSync(ctx, &kgo.Record{Topic: schemas.TopicKeys, Key: []byte(id), Value: val}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := txn.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}
	inTxn("dk-aborted", kgo.TryAbort)
	inTxn("dk-committed", kgo.TryCommit)
	if _, err := reg.Get(ctx, "demo", "dk-committed"); err != nil {
		t.Fatalf("committed key: %v", err)
	}
	if _, err := reg.Get(ctx, "demo", "dk-aborted"); !errors.Is(err, keyreg.ErrNotFound) {
		t.Fatalf("aborted key: %v", err)
	}
	// A deadline that ends before the registry could read is not "not
	// found": nothing is known then.
	gone, cancelGone := context.WithCancel(ctx)
	cancelGone()
	if _, err := reg.Get(gone, "demo", "dk-other"); errors.Is(err, keyreg.ErrNotFound) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled lookup: %v", err)
	}

	// A registry started again knows every key from the start of the
	// topic: nothing is consumed through a committed offset.
	cl2, err := kafkaclient.New(cfg, keyreg.ConsumeOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	reg2 := keyreg.Start(cl2)
	defer reg2.Close()
	for _, id := range []string{"dk-1", "dk-3", "dk-committed"} {
		if _, err := reg2.Get(ctx, "demo", id); err != nil {
			t.Fatalf("restarted registry, %s: %v", id, err)
		}
	}
}

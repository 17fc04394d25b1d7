package devstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/internal/seal"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// SelfCheck exercises every seam of the stack once, the way the pipeline
// will: a data key is generated and registered, a call event with a sealed
// participant is produced in a transaction, a sealed object is stored under
// retention (and its deletion refused), then everything is read back and
// opened. Progress goes to w. It returns the first failure.
func (s *Stack) SelfCheck(ctx context.Context, w io.Writer, tenant string) error {
	callID := schemas.RandomID()
	dk, err := s.Keys.GenerateDataKey(ctx, tenant)
	if err != nil {
		return err
	}
	keyID := "dk-" + callID
	sl, err := seal.New(tenant, keyID, dk.Plaintext)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "  data key %s for tenant %s wrapped by %s v%d\n", keyID, tenant, dk.Wrapped.KEKName, dk.Wrapped.KEKVersion)

	identity, err := proto.Marshal(&verbatimv1.ParticipantIdentity{Uri: "sip:alice@example.com", Number: "+15551234567"})
	if err != nil {
		return err
	}
	sealedID, err := sl.Seal(nil, "verbatim.v1.ParticipantIdentity", identity)
	if err != nil {
		return err
	}
	now := time.Now()
	events := []struct {
		topic, key string
		msg        proto.Message
	}{
		{schemas.TopicKeys, keyID, &verbatimv1.DataKey{KeyId: keyID, Tenant: tenant, WrappedDek: dk.Wrapped.Ciphertext,
			KekName: dk.Wrapped.KEKName, KekVersion: dk.Wrapped.KEKVersion, KeyManager: s.Keys.Kind(),
			CreatedAt: timestamppb.New(now), Purpose: "call", CallId: callID}},
		{schemas.TopicCalls, callID, &verbatimv1.CallStarted{CallId: callID, StartedAt: timestamppb.New(now), DataKeyId: keyID,
			Participants: []*verbatimv1.Participant{{ParticipantId: "caller", Role: verbatimv1.ParticipantRole_PARTICIPANT_ROLE_CALLER, Identity: sealedID}}}},
	}

	prod, err := s.Client("verbatim-selfcheck", kgo.TransactionalID("verbatim-selfcheck"))
	if err != nil {
		return err
	}
	defer prod.Close()
	if err := prod.BeginTransaction(); err != nil {
		return fmt.Errorf("selfcheck: begin transaction: %w", err)
	}
	var recs []*kgo.Record
	for _, e := range events {
		rec, err := schemas.NewRecord(e.topic, []byte(e.key), schemas.Envelope{ID: schemas.RandomID(), Tenant: tenant, CallID: callID,
			OccurredAt: now, Producer: "verbatim-dev/selfcheck"}, e.msg)
		if err != nil {
			return err
		}
		recs = append(recs, rec)
	}
	// Every record must be accepted before the commit, or the
	// transaction aborts.
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return errors.Join(fmt.Errorf("selfcheck: produce: %w", err), prod.EndTransaction(ctx, kgo.TryAbort))
	}
	if err := prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("selfcheck: commit: %w", err)
	}
	fmt.Fprintf(w, "  committed DataKey and CallStarted for call %s in one transaction\n", callID)

	// A sealed object under retention.
	blob := make([]byte, 64<<10)
	if _, err := rand.Read(blob); err != nil {
		return err
	}
	sealedBlob, err := sl.Seal(nil, "verbatim.v1.selfcheck", blob)
	if err != nil {
		return err
	}
	body, err := proto.Marshal(sealedBlob)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	objKey := fmt.Sprintf("%s/%s/%s/selfcheck", tenant, now.UTC().Format("2006/01/02"), callID)
	if _, err := s.Store.Put(ctx, objKey, bytes.NewReader(body), int64(len(body)),
		objstore.PutOptions{SHA256: sum[:], RetainUntil: now.Add(time.Minute)}); err != nil {
		return err
	}
	if err := s.Store.Delete(ctx, objKey); !errors.Is(err, objstore.ErrRetained) {
		return fmt.Errorf("selfcheck: delete of retained object %s: got %v, want refusal", objKey, err)
	}
	fmt.Fprintf(w, "  stored sealed object %s (sha256 %s…), retained: delete refused\n", objKey, hex.EncodeToString(sum[:6]))

	// Read back: the consumer knows only the keyring and the topics.
	cons, err := s.Client("verbatim-selfcheck-reader", kgo.ConsumeTopics(schemas.TopicKeys, schemas.TopicCalls),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	defer cons.Close()
	var gotKey *verbatimv1.DataKey
	var gotCall *verbatimv1.CallStarted
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for gotKey == nil || gotCall == nil {
		fs := cons.PollFetches(rctx)
		if rctx.Err() != nil {
			return fmt.Errorf("selfcheck: events not consumed: %w", rctx.Err())
		}
		for _, r := range fs.Records() {
			env, err := schemas.ParseHeaders(r.Headers)
			if err != nil || env.CallID != callID {
				continue
			}
			switch env.Type {
			case "verbatim.v1.DataKey":
				gotKey = &verbatimv1.DataKey{}
				err = proto.Unmarshal(r.Value, gotKey)
			case "verbatim.v1.CallStarted":
				gotCall = &verbatimv1.CallStarted{}
				err = proto.Unmarshal(r.Value, gotCall)
			}
			if err != nil {
				return fmt.Errorf("selfcheck: decode %s: %w", env.Type, err)
			}
		}
	}
	dek, err := s.Keys.UnwrapDataKey(ctx, tenant, keys.Wrapped{KEKName: gotKey.GetKekName(), KEKVersion: gotKey.GetKekVersion(), Ciphertext: gotKey.GetWrappedDek()})
	if err != nil {
		return err
	}
	opener, err := seal.New(tenant, gotKey.GetKeyId(), dek)
	if err != nil {
		return err
	}
	pt, err := opener.Open(nil, "verbatim.v1.ParticipantIdentity", gotCall.GetParticipants()[0].GetIdentity())
	if err != nil {
		return err
	}
	var id verbatimv1.ParticipantIdentity
	if err := proto.Unmarshal(pt, &id); err != nil {
		return err
	}
	rc, _, err := s.Store.Get(ctx, objKey)
	if err != nil {
		return err
	}
	defer rc.Close()
	stored, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	var sb verbatimv1.Sealed
	if err := proto.Unmarshal(stored, &sb); err != nil {
		return err
	}
	back, err := opener.Open(nil, "verbatim.v1.selfcheck", &sb)
	if err != nil {
		return err
	}
	if !bytes.Equal(back, blob) || id.GetUri() != "sip:alice@example.com" {
		return errors.New("selfcheck: read-back differs from what was written")
	}
	fmt.Fprintf(w, "  read back: unwrapped the data key, opened the caller's identity (%s) and the stored object\n", id.GetUri())
	return nil
}

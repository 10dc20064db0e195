package sealer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/commands/sealer"
	"github.com/keyreg/keyreg/events"
)

// signerRecords returns every signer event of the log.
func (e *env) signerRecords(t *testing.T) []events.Record {
	t.Helper()
	var out []events.Record
	if err := e.log.Read(context.Background(), events.SignersFilter(), 1, func(r events.Record) error {
		out = append(out, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRegisterOnce: registering a key is idempotent, from the same sealer or another
// holding the same key (a restart): one keyreg.signer.added.v1 event, whose id is derived
// from the key.
func TestRegisterOnce(t *testing.T) {
	forEachLog(t, func(t *testing.T, log events.Log) {
		e := newEnv(t, log)
		ctx := context.Background()
		s, vkey := e.unregisteredSealer(t, sealer.Config{}, nil)
		st, err := s.Register(ctx, "node-a")
		if err != nil {
			t.Fatal(err)
		}
		if !st.Active() || st.VerifierKey != vkey || st.Node != "node-a" || st.ID != events.SignerID(vkey) {
			t.Fatalf("state after Register: %+v", st)
		}
		if _, err := s.Register(ctx, "node-a"); err != nil {
			t.Fatal(err)
		}
		again := sealer.New(sealer.Config{}, e.log, e.views, sealer.Key{VerifierKey: vkey}, nil, nil)
		if st2, err := again.Register(ctx, "node-a restarted"); err != nil || st2.AddedSeq != st.AddedSeq {
			t.Fatalf("Register after a restart: %+v, %v; want the first registration at %d", st2, err, st.AddedSeq)
		}
		recs := e.signerRecords(t)
		if len(recs) != 1 || recs[0].MsgID != events.SignerAddedEventID(vkey) || recs[0].Seq != st.AddedSeq {
			t.Fatalf("signer events %+v; want one, with id %s", recs, events.SignerAddedEventID(vkey))
		}
	})
}

// TestSealOnlyWithVouchedKey: a sealer whose key is not registered signs nothing; once
// registered it seals; once retired it seals and attests nothing more (another
// registered key seals the next round), keeps its earlier checkpoint, and cannot register
// the key again.
func TestSealOnlyWithVouchedKey(t *testing.T) {
	forEachLog(t, func(t *testing.T, log events.Log) {
		e := newEnv(t, log)
		ctx := context.Background()
		a, vkeyA := e.unregisteredSealer(t, sealer.Config{}, nil)
		last := e.addKeys(t, 2)
		if _, err := a.Seal(ctx, last); !errors.Is(err, sealer.ErrNotVouched) || errors.Is(err, sealer.ErrKeyRetired) {
			t.Fatalf("Seal with an unregistered key: %v; want ErrNotVouched", err)
		}
		if _, err := a.Attest([]byte("statement\n")); !errors.Is(err, sealer.ErrNotVouched) {
			t.Fatalf("Attest with an unregistered key: %v; want ErrNotVouched", err)
		}
		if n := len(e.checkpoints(t)); n != 0 {
			t.Fatalf("%d checkpoints by an unregistered key", n)
		}

		st, err := a.Register(ctx, "node-a")
		if err != nil {
			t.Fatal(err)
		}
		if err := e.proj.WaitFor(ctx, st.AddedSeq); err != nil {
			t.Fatal(err)
		}
		cp, err := a.Seal(ctx, st.AddedSeq)
		if err != nil {
			t.Fatal(err)
		}
		if cps := e.checkpoints(t); len(cps) != 1 || !signedBy(cps[0], vkeyA) {
			t.Fatalf("checkpoints %+v; want one signed by A", cps)
		}
		if _, err := a.Attest([]byte("statement\n")); err != nil {
			t.Fatal(err)
		}

		b, vkeyB := e.sealer(t, sealer.Config{}, nil)
		res, err := e.h.RetireSigner(ctx, commands.RetireSigner{VerifierKey: vkeyA})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.proj.WaitFor(ctx, res.Seq); err != nil {
			t.Fatal(err)
		}
		last = e.addKeys(t, 2)
		if _, err := a.Seal(ctx, last); !errors.Is(err, sealer.ErrKeyRetired) || !errors.Is(err, sealer.ErrNotVouched) {
			t.Fatalf("Seal with a retired key: %v; want ErrKeyRetired", err)
		}
		if _, err := a.Attest([]byte("statement\n")); !errors.Is(err, sealer.ErrKeyRetired) {
			t.Fatalf("Attest with a retired key: %v; want ErrKeyRetired", err)
		}
		if cps := e.checkpoints(t); len(cps) != 1 || cps[0].TreeSize != cp.TreeSize {
			t.Fatalf("checkpoints %+v after the retirement; want A's one of %d events only", cps, cp.TreeSize)
		}
		if _, err := b.Seal(ctx, last); err != nil {
			t.Fatalf("Seal by B, registered: %v", err)
		}
		if cps := e.checkpoints(t); len(cps) != 2 || !signedBy(cps[1], vkeyB) {
			t.Fatalf("checkpoints %+v; want A's, then B's", cps)
		}
		if _, err := a.Register(ctx, "node-a"); !errors.Is(err, sealer.ErrKeyRetired) || !errors.Is(err, commands.ErrSignerRetired) {
			t.Fatalf("Register of a retired key: %v; want ErrKeyRetired", err)
		}
		// Retiring again changes nothing; retiring a key never added is not found.
		if again, err := e.h.RetireSigner(ctx, commands.RetireSigner{VerifierKey: vkeyA}); err != nil || again.Version != res.Version {
			t.Fatalf("retire again: %+v, %v", again, err)
		}
		_, vkeyC := e.unregisteredSealer(t, sealer.Config{}, nil)
		if _, err := e.h.RetireSigner(ctx, commands.RetireSigner{VerifierKey: vkeyC}); !errors.Is(err, events.ErrNotFound) {
			t.Fatalf("retire an unknown key: %v; want ErrNotFound", err)
		}
		if _, err := e.h.RetireSigner(ctx, commands.RetireSigner{VerifierKey: "not-a-key"}); !errors.Is(err, events.ErrInvalid) {
			t.Fatalf("retire a malformed key: %v; want ErrInvalid", err)
		}
	})
}

// TestRetiredSealerGivesUpTheLease: the lease holder's key is retired; it releases the
// lease and takes it no more, and the other node seals from then on.
func TestRetiredSealerGivesUpTheLease(t *testing.T) {
	e := newEnv(t, events.NewMemLog())
	ls := &leases{}
	cfg := sealer.Config{EveryEvents: 3, Interval: -1, Poll: 5 * time.Millisecond}
	a, vkeyA := e.sealer(t, cfg, ls.lease("a", 60*time.Millisecond))
	run(t, a)
	waitFor(t, "a to take the lease", func() bool { h, _ := ls.state(""); return h == "a" })
	b, vkeyB := e.sealer(t, cfg, ls.lease("b", 60*time.Millisecond))
	run(t, b)
	e.addKeys(t, 3)
	waitFor(t, "a checkpoint by a", func() bool { cps := e.checkpoints(t); return len(cps) > 0 && signedBy(cps[len(cps)-1], vkeyA) })

	if _, err := e.h.RetireSigner(context.Background(), commands.RetireSigner{VerifierKey: vkeyA}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to take the lease", func() bool { h, _ := ls.state(""); return h == "b" })
	e.addKeys(t, 3)
	waitFor(t, "a checkpoint by b", func() bool { cps := e.checkpoints(t); return signedBy(cps[len(cps)-1], vkeyB) })
	_, triesA := ls.state("a")
	e.addKeys(t, 3)
	waitFor(t, "another checkpoint by b", func() bool {
		cps := e.checkpoints(t)
		return len(cps) > 0 && signedBy(cps[len(cps)-1], vkeyB) && cps[len(cps)-1].TreeSize >= e.lastSeq(t)-1
	})
	if _, n := ls.state("a"); n != triesA {
		t.Fatalf("a, retired, tried the lease %d more times", n-triesA)
	}
}

package coordinator

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/agentnet/agentnet/coordinator/audit"
	"github.com/agentnet/agentnet/coordinator/policy"
	"github.com/agentnet/agentnet/coordinator/store"
	"github.com/agentnet/agentnet/wire"
)

// defaultBy names the submitter of the built-in default policy.
const defaultBy = "built-in default"

// policyState is one policy version in force, parsed.
type policyState struct {
	rec wire.PolicyRecord
	p   *policy.Policy
}

// policyFor returns the state for the stored latest policy (ok) or the
// built-in default, reusing prev's parse when the version is unchanged. A
// stored policy that no longer parses (a newer coordinator validating
// more strictly) fails closed: no rule, nothing allowed, logged loudly, so
// the admin can set a fixed one.
func (c *Coordinator) policyFor(rec wire.PolicyRecord, ok bool, prev *snapshot) *policyState {
	if !ok {
		rec = wire.PolicyRecord{Version: 0, Text: policy.DefaultText, Source: "default", By: defaultBy}
	}
	if prev != nil && prev.policy != nil && prev.policy.rec.Version == rec.Version {
		return prev.policy
	}
	p, err := policy.Parse(rec.Source, []byte(rec.Text))
	if err != nil {
		c.log.Error("coordinator: stored policy does not parse; denying everything until a valid one is set with 'agentnet policy set'",
			"version", rec.Version, "err", err)
		p = &policy.Policy{Source: rec.Source, Groups: map[string][]policy.Selector{}}
	}
	return &policyState{rec: rec, p: p}
}

// index returns the snapshot's policy compiled against its nodes, building
// it on first use.
func (s *snapshot) index(c *Coordinator) *policy.Index {
	s.ixOnce.Do(func() {
		ps := s.policy
		if ps == nil {
			ps = &policyState{rec: wire.PolicyRecord{Text: policy.DefaultText, By: defaultBy}, p: policy.Default()}
		}
		nodes := make([]policy.Node, len(s.nodes))
		for i, n := range s.nodes {
			nodes[i] = policy.Node{Name: n.Name, Tags: n.Tags, Addrs: []netip.Addr{n.IPv4, n.IPv6}}
		}
		s.ix = policy.NewIndex(ps.p, nodes, policy.Options{Version: ps.rec.Version, Prefix4: c.prefix4, Prefix6: c.ula})
	})
	return s.ix
}

// policyNodes returns the snapshot's nodes as the policy sees them.
func policyNodes(s *snapshot) []policy.Node {
	out := make([]policy.Node, len(s.nodes))
	for i, n := range s.nodes {
		out[i] = policy.Node{Name: n.Name, Tags: n.Tags}
	}
	return out
}

// policyRoutes adds the policy and node-tag endpoints to the API mux.
func (c *Coordinator) policyRoutes(mux *http.ServeMux) {
	mux.Handle("PUT "+wire.PathAdminPolicy, c.serve(c.admin(c.handleSetPolicy)))
	mux.Handle("GET "+wire.PathAdminPolicy, c.serve(c.admin(c.handleGetPolicy)))
	mux.Handle("POST "+wire.PathAdminPolicyWhy, c.serve(c.admin(c.handleWhy)))
	mux.Handle("PUT "+wire.PathAdminNodes+"/{name}"+wire.PathNodeTagsSuffix, c.serve(c.admin(c.handleSetTags)))
}

// logDefaultPolicy tells the operator, at start, that the allow-all
// default is in force and how to replace it.
func (c *Coordinator) logDefaultPolicy() {
	s := c.snap.Load()
	if s.policy == nil || s.policy.rec.Version == 0 {
		c.log.Info("coordinator: running the built-in default policy: every node may reach every node on every port; "+
			"replace it with 'agentnet policy set FILE --admin "+c.credPath+"' (see docs/POLICY.md)", "version", 0)
		return
	}
	c.log.Info("coordinator: policy in force", "version", s.policy.rec.Version, "rules", len(s.policy.p.Rules))
}

// handleSetPolicy validates a policy, runs its tests against the current
// nodes and stores it as a new version; the map serial is bumped and every
// node gets a map compiled from it.
func (c *Coordinator) handleSetPolicy(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	var req wire.PolicySetRequest
	if err := decodeStrict(body, &req); err != nil {
		return err
	}
	if req.Source == "" {
		req.Source = "policy.yaml"
	}
	if req.By == "" {
		req.By = "admin"
	}
	if len(req.Source) > 200 || len(req.By) > 200 {
		return refuse(http.StatusBadRequest, wire.CodeBadRequest, "source and by are at most 200 bytes")
	}
	p, err := policy.Parse(req.Source, []byte(req.Text))
	if err != nil {
		return refuse(http.StatusUnprocessableEntity, wire.CodePolicyInvalid, "policy refused, it is not valid:\n%v", err)
	}
	results := p.Check(policyNodes(c.snap.Load()))
	if fails := p.Failures(results); len(fails) > 0 {
		return refuse(http.StatusUnprocessableEntity, wire.CodePolicyTestsFailed,
			"policy refused, %d of its %d tests fail against the current nodes:\n%s", len(fails), len(results), strings.Join(fails, "\n"))
	}
	rec := wire.PolicyRecord{Text: req.Text, Source: req.Source, Created: c.now().UTC(), By: req.By, Address: r.RemoteAddr}
	err = c.store.Update(func(tx store.Tx) (err error) {
		if rec, err = tx.AddPolicy(rec); err != nil {
			return err
		}
		_, err = tx.BumpSerial()
		return err
	})
	if err != nil {
		return err
	}
	c.log.Info("coordinator: policy set", "version", rec.Version, "rules", len(p.Rules), "tests", len(results), "by", rec.By, "endpoint", r.RemoteAddr)
	sum := sha256.Sum256([]byte(rec.Text))
	c.audit.Record(audit.KindPolicyChange, "actor", "admin", "remote", r.RemoteAddr, "subject", fmt.Sprintf("policy v%d", rec.Version),
		"version", rec.Version, "rules", len(p.Rules), "sha256", hex.EncodeToString(sum[:]))
	if err := c.changed(); err != nil {
		return err
	}
	resp := wire.PolicySetResponse{Version: rec.Version, Rules: len(p.Rules)}
	for _, res := range results {
		switch {
		case res.Skipped != "":
			resp.Skipped = append(resp.Skipped, res.Message(p.Source))
		case res.Pass:
			resp.Passed++
		}
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// handleGetPolicy returns the current policy, or ?version=N.
func (c *Coordinator) handleGetPolicy(w http.ResponseWriter, r *http.Request) error {
	var v uint64
	if q := r.URL.Query().Get("version"); q != "" {
		var err error
		if v, err = strconv.ParseUint(q, 10, 64); err != nil {
			return refuse(http.StatusBadRequest, wire.CodeBadRequest, "version %.20q is not a number", q)
		}
		if v == 0 {
			writeJSON(w, http.StatusOK, wire.PolicyRecord{Version: 0, Text: policy.DefaultText, Source: "default", By: defaultBy})
			return nil
		}
	}
	var (
		rec wire.PolicyRecord
		ok  bool
	)
	if err := c.store.View(func(tx store.Tx) (err error) {
		rec, ok, err = tx.Policy(v)
		return err
	}); err != nil {
		return err
	}
	switch {
	case !ok && v != 0:
		return refuse(http.StatusNotFound, wire.CodeNotFound, "no policy version %d", v)
	case !ok:
		rec = wire.PolicyRecord{Version: 0, Text: policy.DefaultText, Source: "default", By: defaultBy}
	}
	writeJSON(w, http.StatusOK, rec)
	return nil
}

// handleWhy decides one connection between two enrolled nodes with the
// policy in force.
func (c *Coordinator) handleWhy(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	var req wire.WhyRequest
	if err := decodeStrict(body, &req); err != nil {
		return err
	}
	if req.Proto == "" {
		req.Proto = policy.ProtoTCP
	}
	switch req.Proto {
	case policy.ProtoTCP, policy.ProtoUDP:
		if req.Port == 0 {
			return refuse(http.StatusBadRequest, wire.CodeBadRequest, "%s needs a port (1-65535)", req.Proto)
		}
	case policy.ProtoICMP:
		req.Port = 0
	default:
		return refuse(http.StatusBadRequest, wire.CodeBadRequest, "proto %.20q: want tcp, udp or icmp", req.Proto)
	}
	s := c.snap.Load()
	d, err := s.index(c).Decide(req.From, req.To, req.Proto, req.Port)
	if errors.Is(err, policy.ErrUnknownNode) {
		return refuse(http.StatusNotFound, wire.CodeNotFound, "%v; list nodes with the admin API or the console", err)
	} else if err != nil {
		return err
	}
	var version uint64
	if s.policy != nil {
		version = s.policy.rec.Version
	}
	writeJSON(w, http.StatusOK, wire.WhyResponse{Allow: d.Allow, Rule: d.Rule, Version: version, From: req.From, To: req.To, Proto: req.Proto, Port: req.Port})
	return nil
}

// handleSetTags replaces a node's tags; the serial is bumped and every
// node gets a map compiled with them. Setting the same tags changes
// nothing.
func (c *Coordinator) handleSetTags(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	var req wire.SetTagsRequest
	if err := decodeStrict(body, &req); err != nil {
		return err
	}
	if len(req.Tags) > maxTags {
		return refuse(http.StatusBadRequest, wire.CodeBadRequest, "%d tags, at most %d", len(req.Tags), maxTags)
	}
	for _, t := range req.Tags {
		if !policy.ValidTag(t) {
			return refuse(http.StatusBadRequest, wire.CodeBadRequest, "tag %.70q is not \"tag:\" followed by lowercase letters, digits and '-'", t)
		}
	}
	tags := slices.Compact(slices.Sorted(slices.Values(req.Tags)))
	if len(tags) == 0 {
		tags = nil
	}
	var (
		n       wire.Node
		changed bool
		old     []string
	)
	err = c.store.Update(func(tx store.Tx) error {
		did, ok, err := tx.NameOwner(name)
		if err != nil {
			return err
		}
		if !ok {
			return refuse(http.StatusNotFound, wire.CodeNotFound, "no node named %q", name)
		}
		if n, ok, err = tx.Node(did); err != nil || !ok {
			return cmpErr(err, refuse(http.StatusNotFound, wire.CodeNotFound, "no node named %q", name))
		}
		if slices.Equal(n.Tags, tags) {
			return nil
		}
		changed, old, n.Tags = true, n.Tags, tags
		if err := tx.PutNode(n); err != nil {
			return err
		}
		_, err = tx.BumpSerial()
		return err
	})
	if err != nil {
		return err
	}
	if changed {
		c.log.Info("coordinator: node tags set", "node", name, "tags", tags, "was", old)
		c.audit.Record(audit.KindPolicyChange, "actor", "admin", "remote", r.RemoteAddr, "subject", name, "tags", tags, "was", old)
		if err := c.changed(); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, n)
	return nil
}

// cmpErr returns err if set, else alt.
func cmpErr(err error, alt error) error {
	if err != nil {
		return err
	}
	return alt
}

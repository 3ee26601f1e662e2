package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/consultest"
	"github.com/adrank/adrank/platform/syncbuf"
)

// startBroker runs bin/devbroker (kfake, the development Kafka broker) on a
// free port and returns its address.
func (c *cluster) startBroker() string {
	c.t.Helper()
	ports, err := consultest.FreePorts(1)
	if err != nil {
		c.t.Fatal(err)
	}
	p := &proc{name: "devbroker", cmd: exec.Command(c.bin("devbroker"), "--port", strconv.Itoa(ports[0]), "--partitions", "4"), out: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	c.t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
		if c.t.Failed() {
			c.t.Logf("--- devbroker output:\n%s", p.out.String())
		}
	})
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	eventually(c.t, settle, func() error { _, err := kcat(addr, nil, "-L"); return err })
	return addr
}

// kcat runs Debian's kcat (librdkafka): a Kafka client we did not write.
func kcat(broker string, stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kcat", append([]string{"-b", broker}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kcat %v: %v: %s", args, err, errb.String())
	}
	return out.String(), nil
}

// produceJSON produces JSON messages with kcat, one per line "key|json".
func produceJSON(t *testing.T, broker, topic string, lines []string) {
	t.Helper()
	if _, err := kcat(broker, []byte(strings.Join(lines, "\n")+"\n"), "-P", "-t", topic, "-K", "|", "-H", "content-type=application/json"); err != nil {
		t.Fatal(err)
	}
}

// consumeCommitted reads a whole topic as a read_committed consumer, with
// kcat: one "key|value" line per message.
func consumeCommitted(t *testing.T, broker, topic string) []string {
	t.Helper()
	out, err := kcat(broker, nil, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-X", "isolation.level=read_committed", "-f", "%k|%s\n")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// The streaming deployment through real processes: the development broker,
// a router running the stream worker, and kcat as the producer and the
// consumer. The worker is kill -9'd in the middle and restarted with the
// same transactional ID: every request is still answered exactly once for a
// read_committed reader, and the A/B test counts each impression and each
// click once. A bad message goes to the dead-letter topic.
func TestStreamExactlyOnce(t *testing.T) {
	c := startCluster(t, demoRankers...)
	broker := c.startBroker()
	c.putKV("adrank/experiments/feed", `{"ab": {"salt": "stream", "arms": [{"version": "v1", "weight": 1}, {"version": "v2", "weight": 1}]}}`)
	ports, err := consultest.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	state := t.TempDir() + "/worker.db"
	// One request per poll: 300 transactions for the first half, each with
	// its store write, so that the kill lands in the middle (checked below).
	args := append([]string{"--listen", addr, "--state-file", state, "--kafka-brokers", broker, "--stream-id", "e2e-worker", "--stream-batch", "1"}, routerLimits...)

	const n = 600
	line := func(i int) string {
		req := rankRequest(fmt.Sprintf("stream-%d", i), "feed")
		req.UserId = fmt.Sprintf("u%d", 1+i%300)
		b, err := protojson.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		return req.GetUserId() + "|" + string(b)
	}
	var first, second []string
	for i := range n {
		if i < n/2 {
			first = append(first, line(i))
		} else {
			second = append(second, line(i))
		}
	}
	produceJSON(t, broker, "adrank.rank.requests", first)
	worker := c.start("routersvc", args...)
	// Kill the worker as soon as it has committed answers: it is then in the
	// middle of the first half.
	// (A read_committed reader that reads to the end keeps reading while
	// the worker keeps committing: ask for one answer only.)
	eventually(t, settle, func() error {
		out, err := kcat(broker, nil, "-C", "-t", "adrank.rank.results", "-o", "beginning", "-c", "1", "-e", "-q", "-X", "isolation.level=read_committed")
		if err != nil || strings.TrimSpace(out) == "" {
			return fmt.Errorf("no answer yet (%v)", err)
		}
		return nil
	})
	if err := worker.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-worker.done
	killedAt := len(consumeCommitted(t, broker, "adrank.rank.results"))
	t.Logf("worker killed with %d of %d answers committed", killedAt, n)
	if killedAt == 0 || killedAt >= n/2 {
		t.Fatalf("the kill did not land mid-stream: %d of the first %d answered", killedAt, n/2)
	}
	produceJSON(t, broker, "adrank.rank.requests", append(second, "u1|{\"user_id\": "))
	c.start("routersvc", args...)

	var results []string
	eventually(t, 2*settle, func() error {
		results = consumeCommitted(t, broker, "adrank.rank.results")
		if len(results) < n {
			return fmt.Errorf("%d answers of %d", len(results), n)
		}
		return nil
	})
	seen := map[string]int{}
	impressions := 0
	var clicks []string
	for _, l := range results {
		key, value, _ := strings.Cut(l, "|")
		var resp routerv1.RankResponse
		if err := protojson.Unmarshal([]byte(value), &resp); err != nil || resp.GetRequestId() != key {
			t.Fatalf("answer %q: %v", l, err)
		}
		seen[key]++
		impressions += len(resp.GetResults())
		if len(clicks) < 100 && len(resp.GetResults()) > 0 {
			imp := resp.GetResults()[0].GetImpressionId()
			clicks = append(clicks, fmt.Sprintf(`%s|{"impression_id": %q, "type": "EVENT_TYPE_CLICK"}`, imp, imp))
		}
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("%s answered %d times", id, k)
		}
	}
	if len(seen) != n || len(results) != n {
		t.Fatalf("%d answers for %d distinct requests, want %d of each", len(results), len(seen), n)
	}
	dead := consumeCommitted(t, broker, "adrank.deadletter")
	if len(dead) != 1 || !strings.HasPrefix(dead[0], "u1|{\"user_id\": ") {
		t.Errorf("dead letters %q, want the one malformed request", dead)
	}
	// Clicks through the events topic, each sent twice: counted once.
	produceJSON(t, broker, "adrank.events", append(clicks, clicks...))

	// The worker's own state (its state file) holds the counts.
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := routerv1.NewRouterServiceClient(cc)
	// The consumer lag is in ListDomains: drained, once the worker is done.
	eventually(t, settle, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d, err := client.ListDomains(ctx, &routerv1.ListDomainsRequest{})
		if err != nil {
			return err
		}
		for _, l := range d.GetStreamLag() {
			if l.GetTopic() == "adrank.rank.requests" && l.GetGroup() == "adrank-stream" && l.GetLag() == 0 {
				return nil
			}
		}
		return fmt.Errorf("stream lag %v, want adrank.rank.requests drained", d.GetStreamLag())
	})
	awaitCounts(t, "A/B arms: every streamed impression and each click once", []int{impressions, len(clicks)}, func() ([]int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rep, err := client.GetExperimentReport(ctx, &routerv1.GetExperimentReportRequest{Domain: "feed"})
		if err != nil {
			return nil, err
		}
		return armCounts(rep.GetAb().GetArms()), nil
	})
}

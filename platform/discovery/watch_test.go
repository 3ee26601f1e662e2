package discovery

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// After an outage, the first answers of a restarted agent are not yet
// settled (probes here saw a service listed with no instances, then its
// checks restored as critical until they ran). The watch keeps the last
// known state through RecoveryHold and then delivers what the agent says:
// here the agent's first answer after the outage is a transient that must
// never reach the caller, and the settled answer must.
func TestBlockHoldsTheLastStateWhileAnAgentSettles(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	fetch := func(q *api.QueryOptions) (string, *api.QueryMeta, error) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		switch {
		case n == 1:
			return "before", &api.QueryMeta{LastIndex: 5}, nil
		case n <= 3:
			return "", nil, errors.New("connection refused") // the outage
		case n == 4:
			return "transient", &api.QueryMeta{LastIndex: 2}, nil // a restarted agent, not settled
		case q.WaitIndex == 3:
			<-q.Context().Done() // a blocking query with nothing new
			return "", nil, q.Context().Err()
		default:
			return "settled", &api.QueryMeta{LastIndex: 3}, nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := make(chan string, 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		block(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), "test", fetch, func(v string) { got <- v })
	}()
	var seen []string
	for len(seen) < 2 {
		select {
		case v := <-got:
			seen = append(seen, v)
		case <-ctx.Done():
			t.Fatalf("delivered %v before the deadline", seen)
		}
	}
	cancel()
	<-done
	if !slices.Equal(seen, []string{"before", "settled"}) {
		t.Errorf("delivered %v, want before, then settled (never the transient)", seen)
	}
}

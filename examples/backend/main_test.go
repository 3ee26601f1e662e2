package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/adrank/adrank/routersvc/adrank"
)

// The backend serves a feed page ranked in its own process, takes clicks,
// and its engine's report counts both, with an A/B test in force.
func TestBackendRanksAndCountsInProcess(t *testing.T) {
	engine, err := adrank.Open(adrank.Config{Models: "../../models", StateFile: filepath.Join(t.TempDir(), "state.db"),
		Experiments: map[string][]byte{"feed": []byte(`{"ab": {"salt": "example", "arms": [{"version": "v1", "weight": 1}, {"version": "v2", "weight": 1}]}}`)}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := engine.Close(); err != nil {
			t.Error(err)
		}
	}()
	srv := httptest.NewServer(handler(engine))
	defer srv.Close()

	var page struct {
		Ads []struct {
			AdID         string `json:"ad_id"`
			Slot         int32  `json:"slot"`
			PriceMicros  int64  `json:"price_micros"`
			ImpressionID string `json:"impression_id"`
		} `json:"ads"`
	}
	get(t, srv.URL+"/feed?user=u42", http.StatusOK, &page)
	if len(page.Ads) != 3 {
		t.Fatalf("page %+v, want 3 ads", page)
	}
	for i, ad := range page.Ads {
		if ad.Slot != int32(i+1) || ad.ImpressionID == "" || ad.PriceMicros <= 0 {
			t.Errorf("slot %d: %+v", i+1, ad)
		}
	}
	click := func(id, want string) {
		t.Helper()
		var out struct{ Result string }
		post(t, srv.URL+"/click?impression="+id, http.StatusOK, &out)
		if out.Result != want {
			t.Errorf("click on %q: %s, want %s", id, out.Result, want)
		}
	}
	click(page.Ads[0].ImpressionID, "EVENT_RESULT_ACCEPTED")
	click(page.Ads[0].ImpressionID, "EVENT_RESULT_DUPLICATE")
	click("no-such-impression", "EVENT_RESULT_UNKNOWN_IMPRESSION")
	get(t, srv.URL+"/feed", http.StatusBadRequest, nil)

	rep, err := engine.Report(context.Background(), "feed")
	if err != nil {
		t.Fatal(err)
	}
	var imps, clicks float64
	for _, a := range rep.GetAb().GetArms() {
		imps += a.GetImpressions()
		clicks += a.GetClicks()
	}
	if rep.GetExperimentId() != "ab:example:v1,v2" || imps != 3 || clicks != 1 {
		t.Errorf("report: experiment %q, %v impressions, %v clicks; want 3 and 1", rep.GetExperimentId(), imps, clicks)
	}
	// A bad experiment document is refused, and the one in force stays.
	if err := engine.SetExperiment("feed", []byte(`{"ab": {"arms": []}}`)); err == nil {
		t.Error("a bad experiment document was accepted")
	}
	if rep, err := engine.Report(context.Background(), "feed"); err != nil || rep.GetExperimentId() != "ab:example:v1,v2" {
		t.Errorf("after a refused document: %q, %v", rep.GetExperimentId(), err)
	}
}

func get(t *testing.T, url string, want int, out any) {
	t.Helper()
	do(t, http.MethodGet, url, want, out)
}

func post(t *testing.T, url string, want int, out any) {
	t.Helper()
	do(t, http.MethodPost, url, want, out)
}

func do(t *testing.T, method, url string, want int, out any) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d, want %d", method, url, resp.StatusCode, want)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
}

package batch

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Bar shows progress as a bar with rate and ETA (for a terminal).
type Bar struct {
	w   io.Writer
	bar *progressbar.ProgressBar
}

// NewBar draws on w.
func NewBar(w io.Writer) *Bar { return &Bar{w: w} }

// Start implements Progress.
func (b *Bar) Start(unit string, done, total int64) {
	b.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(b.w),
		progressbar.OptionSetDescription("scoring"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString(unit),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionFullWidth(),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(b.w) }),
	)
	_ = b.bar.Set64(done)
}

// Add implements Progress.
func (b *Bar) Add(n int64) { _ = b.bar.Add64(n) }

// Finish implements Progress.
func (b *Bar) Finish() { _ = b.bar.Exit() }

// Lines logs progress every interval (for logs, not a terminal): done,
// total, rate over the run and ETA.
type Lines struct {
	log   *slog.Logger
	every time.Duration
	mu    sync.Mutex
	unit  string
	start time.Time
	from  int64
	done  int64
	total int64
	stop  chan struct{}
	wg    sync.WaitGroup
}

// NewLines logs to log every interval.
func NewLines(log *slog.Logger, every time.Duration) *Lines { return &Lines{log: log, every: every} }

// Start implements Progress.
func (l *Lines) Start(unit string, done, total int64) {
	l.unit, l.from, l.done, l.total, l.start = unit, done, done, total, time.Now()
	l.stop = make(chan struct{})
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		t := time.NewTicker(l.every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				l.line("progress")
			case <-l.stop:
				return
			}
		}
	}()
}

// Add implements Progress.
func (l *Lines) Add(n int64) {
	l.mu.Lock()
	l.done += n
	l.mu.Unlock()
}

// Finish implements Progress.
func (l *Lines) Finish() {
	close(l.stop)
	l.wg.Wait()
	l.line("input read")
}

func (l *Lines) line(msg string) {
	l.mu.Lock()
	done := l.done
	l.mu.Unlock()
	took := time.Since(l.start)
	rate := float64(done-l.from) / took.Seconds()
	attrs := []any{"unit", l.unit, "done", done, "total", l.total,
		"percent", fmt.Sprintf("%.1f", 100*float64(done)/float64(max(l.total, 1))), "per_second", fmt.Sprintf("%.0f", rate)}
	if rate > 0 && done < l.total {
		attrs = append(attrs, "eta", (time.Duration(float64(l.total-done) / rate * 1e9)).Round(time.Second).String())
	}
	l.log.Info(msg, attrs...)
}

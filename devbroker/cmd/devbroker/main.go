// Command devbroker is a Kafka broker for development and tests: franz-go's
// kfake, an in-process cluster that speaks the Kafka protocol (producers,
// consumer groups, transactions, read_committed), with the given topics
// created. It keeps everything in memory and loses it on exit: it is not
// production storage. In production, point --kafka-brokers at a real
// cluster.
//
//	devbroker --port 9092 --partitions 4 --topics adrank.rank.requests,adrank.rank.results,adrank.events,adrank.deadletter,adrank.features
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	port := flag.Int("port", 9092, "port on 127.0.0.1")
	partitions := flag.Int("partitions", 4, "partitions of each topic")
	topics := flag.String("topics", "adrank.rank.requests,adrank.rank.results,adrank.events,adrank.deadletter,adrank.features", "topics to create, comma-separated")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *port, *partitions, strings.Split(*topics, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "devbroker:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, port, partitions int, topics []string) error {
	if port <= 0 || port > 65535 || partitions <= 0 || partitions > 1000 {
		return fmt.Errorf("--port %d, --partitions %d: want a port and 1 to 1000 partitions", port, partitions)
	}
	c, err := kfake.NewCluster(kfake.Ports(port), kfake.SeedTopics(int32(partitions), topics...))
	if err != nil {
		return err
	}
	defer c.Close()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	log.Info("development Kafka broker (in memory, not for production)", "addrs", c.ListenAddrs(), "topics", topics, "partitions", partitions)
	<-ctx.Done()
	return nil
}

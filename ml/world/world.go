// Package world is adrank's seeded synthetic ad world: users with attributes
// and interests, advertisers, ads in several domains, and a hidden click model
// from which click logs are sampled.
//
// The same seed always gives the same world. featuresvc serves the observable
// part of it; the click model stays hidden and is used only to sample logs for
// training and to simulate users.
package world

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
)

// Topics are the ad and interest categories, each with one query keyword.
var Topics = []string{
	"sports", "travel", "finance", "games", "fashion", "food",
	"tech", "autos", "music", "movies", "health", "home",
}

// NumTopics is len(Topics).
const NumTopics = 12

// Countries the world's users live in.
var Countries = []string{"US", "DE", "BR", "IN", "JP", "FR"}

// Devices are the device names context features understand.
var Devices = []string{"mobile", "desktop", "tablet"}

// Config sizes a world.
type Config struct {
	Seed         uint64
	Users        int
	Advertisers  int
	AdsPerDomain int
	Domains      []string
}

// RegisterFlags lets a command's flags change c: the seed and the numbers of
// users and of ads per domain.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.Uint64Var(&c.Seed, "seed", c.Seed, "seed of the synthetic world")
	fs.IntVar(&c.Users, "users", c.Users, "number of users")
	fs.IntVar(&c.AdsPerDomain, "ads-per-domain", c.AdsPerDomain, "number of ads per domain")
}

// DefaultConfig is the demo world that `make run` serves and the demo models
// were trained on.
func DefaultConfig() Config {
	return Config{Seed: 42, Users: 5000, Advertisers: 200, AdsPerDomain: 1000, Domains: []string{"feed", "stories"}}
}

// User is one user. Interests sum to 1.
type User struct {
	ID        string
	Age       int
	Country   string
	Activity  float64 // 0..1, how much the user engages with ads
	Interests [NumTopics]float64
	HistCTR   float64 // the store's noisy estimate of the user's click rate
}

// Advertiser is one advertiser.
type Advertiser struct {
	ID    string
	Topic int
}

// Ad is one ad. Quality is hidden; HistCTR is the store's noisy estimate.
type Ad struct {
	ID           string
	AdvertiserID string
	Domain       string
	Topic        int
	Quality      float64
	HistCTR      float64
	AgeDays      int
}

// World is an immutable synthetic world; it is safe for concurrent use.
type World struct {
	cfg         Config
	users       []*User
	userByID    map[string]*User
	advertisers []*Advertiser
	ads         map[string]*Ad
	adsByDomain map[string][]*Ad
}

// New builds the world for cfg. It is deterministic in cfg.
func New(cfg Config) (*World, error) {
	if cfg.Users < 1 || cfg.Advertisers < 1 || cfg.AdsPerDomain < 1 || len(cfg.Domains) == 0 {
		return nil, fmt.Errorf("world config needs users, advertisers, ads per domain and domains: %+v", cfg)
	}
	for _, d := range cfg.Domains {
		if _, ok := domainBase[d]; !ok {
			return nil, fmt.Errorf("world has no click model for domain %q", d)
		}
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	w := &World{
		cfg:         cfg,
		userByID:    make(map[string]*User, cfg.Users),
		ads:         make(map[string]*Ad),
		adsByDomain: make(map[string][]*Ad),
	}
	for i := range cfg.Users {
		u := NewUser(rng, fmt.Sprintf("u%d", i+1))
		w.users = append(w.users, u)
		w.userByID[u.ID] = u
	}
	for i := range cfg.Advertisers {
		w.advertisers = append(w.advertisers, &Advertiser{ID: fmt.Sprintf("adv%d", i+1), Topic: rng.IntN(NumTopics)})
	}
	n := 0
	for _, d := range cfg.Domains {
		for range cfg.AdsPerDomain {
			n++
			a := w.NewAd(rng, fmt.Sprintf("ad%d", n), d)
			w.ads[a.ID] = a
			w.adsByDomain[d] = append(w.adsByDomain[d], a)
		}
	}
	return w, nil
}

// NewUser draws a user that the world does not store: a cold-start user.
func NewUser(rng *rand.Rand, id string) *User {
	u := &User{
		ID:       id,
		Age:      18 + rng.IntN(53),
		Country:  Countries[rng.IntN(len(Countries))],
		Activity: rng.Float64(),
	}
	// Sparse interests: two or three topics carry most of the mass.
	var sum float64
	for t := range NumTopics {
		v := 0.05 * rng.Float64()
		u.Interests[t] = v
		sum += v
	}
	for range 2 + rng.IntN(2) {
		v := 0.5 + rng.Float64()
		u.Interests[rng.IntN(NumTopics)] += v
		sum += v
	}
	for t := range NumTopics {
		u.Interests[t] /= sum
	}
	u.HistCTR = clamp01(sigmoid(-3.4 + 0.6*(u.Activity-0.5) + 0.25*rng.NormFloat64()))
	return u
}

// NewAd draws an ad of domain d that the world does not store (a cold-start ad)
// for one of the world's advertisers.
func (w *World) NewAd(rng *rand.Rand, id, d string) *Ad {
	adv := w.advertisers[rng.IntN(len(w.advertisers))]
	topic := adv.Topic
	if rng.Float64() < 0.2 {
		topic = rng.IntN(NumTopics)
	}
	q := rng.NormFloat64()
	return &Ad{
		ID:           id,
		AdvertiserID: adv.ID,
		Domain:       d,
		Topic:        topic,
		Quality:      q,
		HistCTR:      clamp01(sigmoid(domainBase[d] + 0.9*q + 0.35*rng.NormFloat64())),
		AgeDays:      rng.IntN(120),
	}
}

// Config returns the world's config.
func (w *World) Config() Config { return w.cfg }

// User looks a user up.
func (w *World) User(id string) (*User, bool) { u, ok := w.userByID[id]; return u, ok }

// Ad looks an ad up.
func (w *World) Ad(id string) (*Ad, bool) { a, ok := w.ads[id]; return a, ok }

// Users returns every stored user, in ID order of creation.
func (w *World) Users() []*User { return w.users }

// Ads returns the stored ads of a domain.
func (w *World) Ads(domain string) []*Ad { return w.adsByDomain[domain] }

// Advertisers returns every advertiser.
func (w *World) Advertisers() []*Advertiser { return w.advertisers }

var domainBase = map[string]float64{"feed": -3.1, "stories": -3.5}

// ClickProb is the hidden click model: the true probability that u clicks a
// in context c. It uses hidden attributes (ad quality, age x topic tastes)
// that no feature exposes directly, so no model can be perfect.
func ClickProb(u *User, a *Ad, c Context) float64 {
	z := domainBase[a.Domain]
	z += 3.0 * (u.Interests[a.Topic] - 1.0/NumTopics)
	z += 0.9 * a.Quality
	z += 0.6 * (u.Activity - 0.5)
	switch {
	case u.Age < 30 && (Topics[a.Topic] == "games" || Topics[a.Topic] == "music"):
		z += 0.6
	case u.Age >= 50 && (Topics[a.Topic] == "finance" || Topics[a.Topic] == "health"):
		z += 0.6
	}
	switch c.Device {
	case "mobile":
		if a.Domain == "stories" {
			z += 0.4
		}
	case "desktop":
		z -= 0.2
	}
	if !c.Time.IsZero() {
		z += 0.25 * math.Sin(2*math.Pi*hourOfDay(c)/24)
	}
	if queryMatches(c.Query, a.Topic) {
		z += 1.2
	}
	return sigmoid(z)
}

func queryMatches(q string, topic int) bool {
	if q == "" {
		return false
	}
	for _, f := range strings.Fields(strings.ToLower(q)) {
		if f == Topics[topic] {
			return true
		}
	}
	return false
}

func sigmoid(z float64) float64 { return 1 / (1 + math.Exp(-z)) }

func clamp01(p float64) float64 { return math.Min(math.Max(p, 1e-6), 1-1e-6) }

package dns

import "time"

const (
	// DefaultDomain is Config.Domain's default.
	DefaultDomain = "agents.internal"

	// ttl is short: the table changes with every network map and agents
	// must not cache a revoked or moved name for long.
	ttl = 5

	// forwardTimeout bounds one upstream exchange.
	forwardTimeout = 3 * time.Second

	// shutdownTimeout bounds how long Close waits for in-flight queries.
	shutdownTimeout = 5 * time.Second
)

// refusedLogInterval spaces the log lines about one refused source.
const refusedLogInterval = 10 * time.Second

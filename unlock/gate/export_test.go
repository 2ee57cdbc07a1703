package gate

import "context"

// SetClaimedHook has g call f with the request's context after a recovery
// claimed its approved point, before the exchange.
func SetClaimedHook(g *Gate, f func(context.Context)) { g.test.claimed = f }

// SetExchangeHook has g call f as each exchange starts.
func SetExchangeHook(g *Gate, f func()) { g.test.exchange = f }

// SetReceivedHook has g call f with the request's context after a
// recovery was read, before it joins a request.
func SetReceivedHook(g *Gate, f func(context.Context)) { g.test.received = f }

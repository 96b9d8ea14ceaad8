package gateway

// Handling is how many requests g's handlers are serving now.
func Handling(g *Gateway) int64 { return g.handlers.Load() }

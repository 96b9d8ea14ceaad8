package vhost

// SetHookBeforeReader installs hookBeforeReader for one test; the returned func
// removes it.
func SetHookBeforeReader(f func(filled <-chan struct{})) (restore func()) {
	hookBeforeReader = f
	return func() { hookBeforeReader = nil }
}

// InFlight is how many blob downloads p has running.
func InFlight(p *Proxy) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.fetches)
}

// SetHookBeforeFill installs hookBeforeFill for one test; the returned func removes it.
func SetHookBeforeFill(f func()) (restore func()) {
	hookBeforeFill = f
	return func() { hookBeforeFill = nil }
}

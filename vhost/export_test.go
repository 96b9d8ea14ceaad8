package vhost

// SetHookBeforeReader installs hookBeforeReader for one test; the returned func
// removes it.
func SetHookBeforeReader(f func(filled <-chan struct{})) (restore func()) {
	hookBeforeReader = f
	return func() { hookBeforeReader = nil }
}

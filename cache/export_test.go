package cache

// SetTestHooks installs the Loader's test hooks; call it before using l.
// joined runs when a caller joins a load another caller started,
// flightDone when a load the Loader ran has finished (its result stored).
func SetTestHooks(l *Loader, joined, flightDone func()) {
	l.joined, l.flightDone = joined, flightDone
}

// DecodeEntry exposes the stored format's parser.
var DecodeEntry = decodeEntry

//go:build race

package momentostore

// raceEnabled: built with the race detector. See closeTopics.
const raceEnabled = true

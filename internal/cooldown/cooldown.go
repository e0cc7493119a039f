// Package cooldown holds the one rule every edge picker of longhaul shares:
// take the first edge in order that is not excluded and not cooling down
// after a failure, else the one whose cool-down ends soonest.
package cooldown

import "time"

// Pick returns the first of order not in exclude whose cool-down (until)
// has ended at now; when every candidate is cooling down, the one whose
// cool-down ends soonest; false when every edge is excluded.
func Pick(order []string, exclude map[string]bool, until map[string]time.Time, now time.Time) (string, bool) {
	var soonest string
	var soonestEnd time.Time
	for _, e := range order {
		if exclude[e] {
			continue
		}
		end, cooling := until[e]
		if !cooling || !now.Before(end) {
			return e, true
		}
		if soonest == "" || end.Before(soonestEnd) {
			soonest, soonestEnd = e, end
		}
	}
	return soonest, soonest != ""
}

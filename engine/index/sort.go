package index

import "slices"

func sortEntries(ents []Entry) {
	slices.SortFunc(ents, func(a, b Entry) int {
		switch {
		case a.Block < b.Block:
			return -1
		case a.Block > b.Block:
			return 1
		case a.TS < b.TS:
			return -1
		case a.TS > b.TS:
			return 1
		}
		return 0
	})
}

# The volume scripts/bench-iscsi.sh measures: 1 GiB in 4096-byte blocks,
# served by `lockstep serve` on loopback next to a tgtd target of the same
# size. No markers are taken during a benchmark; the schedule only
# satisfies the policy language.
service "bench" {
  volume "disk" {
    size        = "1GiB"
    block_size  = 4096
    target_name = "iqn.2026-11.io.lockstep:bench"
  }

  consistency {
    every = "1h"
  }

  rpo {
    journal = "2h"
  }
}

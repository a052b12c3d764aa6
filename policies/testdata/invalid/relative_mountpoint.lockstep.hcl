service "shop" {
  volume "data" {
    size       = "10GiB"
    initiators = ["iqn.2026-11.com.example:host1"]
  }
  app "fsfreeze" "fs" {
    volumes     = ["data"]
    mountpoints = ["/srv/shop", "var/lib/shop"]
  }
  consistency {
    every = "1m"
  }
  rpo {
    journal = "5m"
  }
}

service "shop" {
  volume "data" {
    size       = "10GiB"
    initiators = ["iqn.2026-11.com.example:host1"]
  }
  app "exec" "web" {
    volumes = ["data"]
    freeze  = ["/usr/local/bin/shop", "pause"]
  }
  consistency {
    every = "1m"
  }
  rpo {
    journal = "5m"
  }
}

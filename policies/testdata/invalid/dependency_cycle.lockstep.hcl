service "shop" {
  volume "data" {
    size       = "10GiB"
    initiators = ["iqn.2026-11.com.example:host1"]
  }
  app "postgres" "db" {
    volumes    = ["data"]
    depends_on = ["web"]
    dsn        = "host=/run/postgresql user=lockstep"
  }
  app "exec" "web" {
    depends_on = ["db"]
    freeze     = ["/usr/local/bin/shop", "pause"]
    thaw       = ["/usr/local/bin/shop", "resume"]
  }
  consistency {
    every = "1m"
  }
  rpo {
    journal = "5m"
  }
}

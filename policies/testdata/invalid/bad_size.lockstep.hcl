service "shop" {
  volume "data" {
    size       = "10 gigs"
    initiators = ["iqn.2026-11.com.example:host1"]
  }
  app "postgres" "db" {
    volumes = ["data"]
    dsn     = "host=/run/postgresql user=lockstep"
  }
  consistency {
    every = "1m"
  }
  rpo {
    journal = "5m"
  }
}

service "shop" {
  volume "data" {
    size       = "10GiB"
    initiators = ["iqn.2026-11.com.example:host1"]
  }
  app "postgres" "db" {
    volumes = ["data"]
    dsn     = "host=/run/postgresql user=lockstep"
  }
  consistency {
    every              = "1m"
    on_quiesce_failure = "crash-consistent"
  }
  rpo {
    journal = "5m"
  }
}

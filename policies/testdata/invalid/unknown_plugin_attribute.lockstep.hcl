service "shop" {
  volume "data" {
    size       = "10GiB"
    initiators = ["iqn.2026-11.com.example:host1"]
  }
  app "postgres" "db" {
    volumes  = ["data"]
    dsn      = "host=/run/postgresql user=lockstep"
    data_directroy = "/var/lib/postgresql/16/main"
  }
  consistency {
    every = "1m"
  }
  rpo {
    journal = "5m"
  }
}

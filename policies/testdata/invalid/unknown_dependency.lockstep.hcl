service "shop" {
  volume "data" {
    size       = "10GiB"
    initiators = ["iqn.2026-11.com.example:host1"]
  }
  app "postgres" "db" {
    volumes = ["data"]
    dsn     = "host=/run/postgresql user=lockstep"
  }
  app "exec" "web" {
    depends_on = ["dbb"]
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

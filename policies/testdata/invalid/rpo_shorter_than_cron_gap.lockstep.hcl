service "shop" {
  volume "data" {
    size       = "10GiB"
    initiators = ["iqn.2026-11.com.example:host1"]
  }
  app "postgres" "db" {
    volumes = ["data"]
    dsn     = "host=/run/postgresql user=lockstep"
  }
  # Business hours only: the weekend leaves a gap of about 2.5 days.
  consistency {
    schedule = "*/10 7-19 * * 1-5"
  }
  rpo {
    journal = "1h"
  }
}

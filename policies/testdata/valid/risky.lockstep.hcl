# Legal, but every choice here deserves a warning.
plugin "custom" {
  source = "/opt/lockstep/plugins/custom"
}

service "risky" {
  volume "open" {
    size = "1GiB"
  }

  volume "longchap" {
    size = "1GiB"
    chap {
      username = "u"
      secret   = env("LONG_SECRET")
    }
  }

  app "postgres" "db" {
    volumes = ["open"]
    dsn     = "postgres://lockstep:hunter2@db.example.com/app"
  }

  consistency {
    every              = "5m"
    quiesce_timeout    = "30s"
    on_quiesce_failure = "skip"
  }

  rpo {
    journal = "5m"
  }
}

service "crash-only" {
  volume "v" {
    size       = "1GiB"
    initiators = ["iqn.2026-11.com.example:h"]
  }

  consistency {
    schedule = "@hourly"
  }

  rpo {
    journal = "2h"
  }
}

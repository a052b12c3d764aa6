# A web portal: nginx and the portal's PHP application serve uploaded content
# from one volume and keep their data in PostgreSQL on another. One marker
# covers both volumes, so a restore never pairs a database with content from
# another moment.
service "web-portal" {
  volume "pgdata" {
    size       = "50GiB"
    initiators = ["iqn.2026-11.com.example:db1"]

    chap {
      username = "portal-db"
      secret   = env("PORTAL_DB_CHAP_SECRET")
    }
  }

  volume "content" {
    size       = "200GiB"
    block_size = 4096
    initiators = ["iqn.2026-11.com.example:web1"]
  }

  app "postgres" "db" {
    volumes        = ["pgdata"]
    dsn            = env("PORTAL_PG_DSN")
    data_directory = "/var/lib/postgresql/16/main"
    pg_ctl         = "/usr/lib/postgresql/16/bin/pg_ctl"
    host           = "db1.example.com"
  }

  app "fsfreeze" "content" {
    volumes     = ["content"]
    mountpoints = ["/srv/portal/content"]
    host        = "web1.example.com"
  }

  # The portal writes to both: it is paused first and resumed last.
  app "exec" "portal" {
    depends_on = ["db", "content"]
    host       = "web1.example.com"
    freeze     = ["/usr/local/bin/portal-maintenance", "on"]
    thaw       = ["/usr/local/bin/portal-maintenance", "off"]
    health     = ["/usr/bin/curl", "-fsS", "http://127.0.0.1/healthz"]
    stop       = ["/usr/bin/systemctl", "stop", "nginx", "php8.2-fpm"]
    start      = ["/usr/bin/systemctl", "start", "php8.2-fpm", "nginx"]
    timeout    = "20s"
  }

  consistency {
    every           = "5m"
    quiesce_timeout = "10s"
  }

  rpo {
    journal = "15m"
  }

  retention {
    journal      = "72h"
    keep_hourly  = 24
    keep_daily   = 14
    keep_weekly  = 8
    keep_monthly = 12
  }
}

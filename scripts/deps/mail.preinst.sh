#!/bin/sh
# Run by install-deps.sh as root before apt-get install. Postfix asks which
# mail configuration to set up; preseed "No configuration", so a
# non-interactive install writes no /etc/postfix/main.cf and starts no
# system Postfix on port 25. The tests run their own instance.
set -eu
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections

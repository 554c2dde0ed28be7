"""lambdatrain: data-parallel deep-network training on AWS Lambda (and on one machine).

The package holds the whole domain; the three Lambda handlers under ``functions/`` are thin
adapters over it, and the Pulumi program under ``components/`` reads its shared definitions
(table schema, stream filter, environment variable names) from here.
"""

__version__ = "0.1.0"

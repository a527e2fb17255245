"""stylerec style stage: style encoder and style transfer."""

//! Object tags: GetObjectTagging, PutObjectTagging.

use aws_sdk_s3::types as s3t;

use super::SdkS3;
use crate::s3::errors::s3_error;
use crate::s3::{S3Error, Tagging};
use crate::vocab::ObjectUrl;

impl Tagging for SdkS3 {
    async fn get_tags(
        &self,
        obj: &ObjectUrl,
        version: Option<&str>,
    ) -> Result<Vec<(String, String)>, S3Error> {
        let out = self
            .client
            .get_object_tagging()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .set_version_id(version.map(str::to_owned))
            .send()
            .await
            .map_err(|e| s3_error(e, &self.display))?;
        Ok(out
            .tag_set()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect())
    }

    async fn put_tags(
        &self,
        obj: &ObjectUrl,
        version: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<(), S3Error> {
        let set = tags
            .iter()
            .map(|(k, v)| s3t::Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| S3Error::from_response(None, None, format!("invalid tag: {e}")))?;
        let tagging = s3t::Tagging::builder()
            .set_tag_set(Some(set))
            .build()
            .map_err(|e| S3Error::from_response(None, None, format!("invalid tags: {e}")))?;
        self.client
            .put_object_tagging()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .set_version_id(version.map(str::to_owned))
            .tagging(tagging)
            .send()
            .await
            .map_err(|e| s3_error(e, &self.display))?;
        Ok(())
    }
}

//! The image half of [`Engine`]: looking images up, pulling, building
//! (with the log kept on failure) and removing them.

use super::*;

impl Engine {
    /// The id (`sha256:...`) of a local image, or `None` when absent.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(i.id),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a local image of that name (or id) exists.
    pub async fn image_exists(&self, image: &str) -> Result<bool> {
        Ok(self.image_id(image).await?.is_some())
    }

    /// The user an image's config runs as (empty: root).
    pub async fn image_user(&self, image: &str) -> Result<String> {
        let i = self.docker.inspect_image(image).await?;
        Ok(i.config.and_then(|c| c.user).unwrap_or_default())
    }

    /// Pulls an image, reporting progress lines; fails with
    /// [`DockerError::Pull`] when it cannot be had.
    pub async fn pull(&self, image: &str, mut on_line: impl FnMut(&str)) -> Result<()> {
        let (repo, tag) = split_tag(image);
        let opts = CreateImageOptionsBuilder::default().from_image(repo).tag(tag).build();
        let mut stream = self.docker.create_image(Some(opts), None, None);
        let mut last = String::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(s) = info.status
                        && s != last
                    {
                        on_line(&s);
                        last = s;
                    }
                }
                Err(e) => return Err(DockerError::Pull { image: image.into(), message: engine_message(&e) }),
            }
        }
        if !self.image_exists(image).await? {
            return Err(DockerError::Pull { image: image.into(), message: "the engine reported no image".into() });
        }
        Ok(())
    }

    /// Builds an image with the engine's classic builder; every line of the
    /// build's output goes to `on_line` as it comes. Returns the image id.
    /// A failed build is [`DockerError::Build`] with the whole log.
    pub async fn build_image(&self, spec: BuildSpec, mut on_line: impl FnMut(&str)) -> Result<String> {
        let (tar, dockerfile) = {
            let (context, dockerfile) = (spec.context.clone(), spec.dockerfile.clone());
            tokio::task::spawn_blocking(move || context_tar(&context, &dockerfile))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??
        };
        let labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        let opts = BuildImageOptionsBuilder::default()
            .dockerfile(&dockerfile)
            .t(&spec.tag)
            .rm(true)
            .forcerm(true)
            .labels(&labels)
            .build();
        let mut stream = self.docker.build_image(opts, None, Some(bollard::body_full(tar.into())));
        let mut log: Vec<String> = Vec::new();
        let mut partial = String::new();
        let mut id: Option<String> = None;
        let mut failure: Option<String> = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(s) = info.stream.or(info.status) {
                        partial.push_str(&s);
                        while let Some(i) = partial.find('\n') {
                            let line: String = partial.drain(..=i).collect();
                            let line = line.trim_end_matches(['\n', '\r']).to_string();
                            on_line(&line);
                            log.push(line);
                        }
                    }
                    if let Some(aux) = info.aux.and_then(|a| a.id) {
                        id = Some(aux);
                    }
                }
                Err(e) => {
                    failure = Some(engine_message(&e));
                    break;
                }
            }
        }
        if !partial.trim().is_empty() {
            let line = partial.trim_end().to_string();
            on_line(&line);
            log.push(line);
        }
        if let Some(message) = failure {
            on_line(&message);
            log.push(message.clone());
            return Err(DockerError::Build { tag: spec.tag, message, log });
        }
        match id {
            Some(id) => Ok(id),
            None => self.image_id(&spec.tag).await?.ok_or_else(|| DockerError::Build {
                tag: spec.tag.clone(),
                message: "the engine reported no image".into(),
                log,
            }),
        }
    }

    /// Removes an image (untags it; layers other images use stay).
    pub async fn remove_image(&self, image: &str) -> Result<()> {
        let opts = bollard::query_parameters::RemoveImageOptionsBuilder::default().force(true).build();
        match self.docker.remove_image(image, Some(opts), None).await {
            Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
